package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// StateStore keeps the detection stage's state that outlives a process —
// each device's state (destination history and recent first contacts,
// behaviour baseline, incident state) and each partition's windowing
// checkpoint — in a compacted Kafka topic. Any instance of the consumer
// group that takes a partition over reads it back, so a restart and a
// partition moving to another instance resume the same way: histories as
// they were, windows already scored not scored again.
//
// The telemetry stage keeps each device's last telemetry sequence number
// there too, so a replayed envelope is caught across restarts and moves.
// Records are keyed so that compaction keeps the newest of each:
//
//	h/<device id>               device checkpoint (devicecheckpoint.go; a bare features.History from before it)
//	p/<flows topic>/<partition> partitionCheckpoint as JSON
//	s/<device id>               last telemetry sequence, its partition and offset (8+4+8 bytes, big-endian)
//	t/<kind>/<device key>       an open trust episode (trustRecord as JSON); a tombstone once it closed
//	f/<flows topic>/<profile>   the profile's fleet episode (fleetJudge.MarshalBinary)
//
// Writes are synchronous and acknowledged by all in-sync replicas; the
// stage commits offsets only after the write that covers them.
type StateStore struct {
	kafka  *kafkaconn.Cluster
	topic  string
	writer *kafka.Writer
}

// openIncident is a device's open incident in a partition checkpoint: the
// device's profile, and the index of its newest judged window, from which
// its silence is counted.
type openIncident struct {
	Profile string `json:"profile"`
	Last    int64  `json:"last"`
}

// partitionCheckpoint is what a partition's next owner needs besides the
// histories to process the records after the committed offset exactly as
// the last owner would have.
type partitionCheckpoint struct {
	// Processed is the newest offset the last owner had processed; its
	// alerts up to there are in that owner's outbox. Records up to it are
	// read again only to rebuild windows still open, and raise no alert
	// of their own.
	Processed int64 `json:"processed"`
	// Watermark is the partition's newest event time seen, Unix ns.
	Watermark int64 `json:"watermark_ns"`
	// Disorder is how far behind the watermark the partition's records
	// had lately come (Unix ns; partitionWindows.wait), so that the next
	// owner waits as long for them from its first window on. Absent in
	// checkpoints written before it: the allowed lateness.
	Disorder int64 `json:"disorder_ns,omitempty"`
	// Closed holds, for devices whose last window the watermark had
	// passed by less than the longest wait (partitionWindows.maxWait),
	// that window's start (Unix ns): its records are read again, and a
	// wait learnt longer would otherwise take them, but the window was
	// scored already.
	Closed map[string]int64 `json:"closed,omitempty"`
	// Held holds, for devices whose records arrive on several partitions,
	// the start (Unix ns) of the oldest window whose part on this
	// partition was closed but still waited for the other parts, unscored
	// (assembly.go): the next owner takes the device's records from that
	// window on again, though the watermark has passed them.
	Held map[string]int64 `json:"held,omitempty"`
	// Open holds the devices tracked on the partition whose incident was
	// open, with their profile and newest judged window: the next owner
	// closes those incidents once the devices have been silent long
	// enough (incidents.Rule.Silence),
	// whether or not they ever send again — a device that fell silent or
	// was revoked across a restart would otherwise keep its incident open
	// for good. Absent in checkpoints written before it.
	Open map[string]openIncident `json:"open,omitempty"`
	// Stream is the topic's identity the offsets refer to (integrity.StreamOf): a
	// checkpoint of a topic since deleted and created again is not
	// resumed. Empty in checkpoints written before streams carried ids.
	Stream string `json:"stream,omitempty"`
}

// NewStateStore writes to and reads from topic, which EnsureStateTopic
// creates compacted.
func NewStateStore(cluster *kafkaconn.Cluster, topic string) *StateStore {
	return &StateStore{kafka: cluster, topic: topic, writer: &kafka.Writer{
		Addr: cluster.Addr(), Topic: topic, Balancer: &kafka.Hash{},
		// A transport of its own: kafka-go's shared one caches cluster
		// metadata for seconds, and may have cached it before the state
		// topic was created, refusing writes to it until it refreshes.
		Transport:    cluster.Transport(),
		RequiredAcks: kafka.RequireAll, BatchSize: 10_000, BatchBytes: kafkaconn.MaxBatchBytes, BatchTimeout: time.Millisecond,
	}}
}

func historyKey(device string) []byte { return []byte("h/" + device) }

func sequenceKey(device string) []byte { return []byte("s/" + device) }

// storedState is what Load reads back.
type storedState struct {
	histories   map[string][]byte
	checkpoints map[int]partitionCheckpoint
	sequences   map[string]seenSequence
	trust       map[string]*trustRecord // open trust episodes by trustKey
	fleets      map[string][]byte       // fleet episodes by profile
}

// seenSequence is a device's last telemetry sequence number and the record
// that carried it: reading that record or an earlier one again (after a
// restart from an older committed offset) is not a replay by the device.
type seenSequence struct {
	seq       uint64
	partition int32
	offset    int64
}

// SaveSequences writes devices' last telemetry sequence numbers.
func (s *StateStore) SaveSequences(ctx context.Context, seqs map[string]seenSequence) error {
	if len(seqs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, 0, len(seqs))
	for id, seq := range seqs {
		v := binary.BigEndian.AppendUint64(make([]byte, 0, 20), seq.seq)
		v = binary.BigEndian.AppendUint32(v, uint32(seq.partition))
		v = binary.BigEndian.AppendUint64(v, uint64(seq.offset))
		msgs = append(msgs, kafka.Message{Key: sequenceKey(id), Value: v})
	}
	if err := s.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("state store %s: %w", s.topic, err)
	}
	return nil
}

// SaveTrust writes trust episodes (trustAlerts.snapshot): a record for each
// open one, a tombstone for each closed one.
func (s *StateStore) SaveTrust(ctx context.Context, recs map[string]*trustRecord) error {
	if len(recs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, 0, len(recs))
	for key, r := range recs {
		kind, device, _ := strings.Cut(key, "\x00")
		m := kafka.Message{Key: []byte("t/" + kind + "/" + device)}
		if r != nil {
			raw, err := json.Marshal(r)
			if err != nil {
				return err
			}
			m.Value = raw
		}
		msgs = append(msgs, m)
	}
	if err := s.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("state store %s: %w", s.topic, err)
	}
	return nil
}

// SaveFleets writes profiles' fleet episode states (Detector.FleetStates).
func (s *StateStore) SaveFleets(ctx context.Context, flows string, states map[string][]byte) error {
	if len(states) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, 0, len(states))
	for profile, b := range states {
		msgs = append(msgs, kafka.Message{Key: []byte("f/" + flows + "/" + profile), Value: b})
	}
	if err := s.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("state store %s: %w", s.topic, err)
	}
	return nil
}

func checkpointKey(topic string, partition int) []byte {
	return []byte("p/" + topic + "/" + strconv.Itoa(partition))
}

// Save writes the changed histories and the partitions' checkpoints.
func (s *StateStore) Save(ctx context.Context, flows string, histories map[string][]byte, parts map[int]partitionCheckpoint) error {
	msgs := make([]kafka.Message, 0, len(histories)+len(parts))
	for id, h := range histories {
		msgs = append(msgs, kafka.Message{Key: historyKey(id), Value: h})
	}
	for p, cp := range parts {
		raw, err := json.Marshal(cp)
		if err != nil {
			return err
		}
		msgs = append(msgs, kafka.Message{Key: checkpointKey(flows, p), Value: raw})
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := s.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("state store %s: %w", s.topic, err)
	}
	return nil
}

// Load reads the topic to its current end: every device's newest history
// and telemetry sequence, and the checkpoints of flows' partitions.
func (s *StateStore) Load(ctx context.Context, flows string) (*storedState, error) {
	histories, parts, seqs := map[string][]byte{}, map[int]partitionCheckpoint{}, map[string]seenSequence{}
	st := &storedState{histories: histories, checkpoints: parts, sequences: seqs, trust: map[string]*trustRecord{}, fleets: map[string][]byte{}}
	conn, err := s.kafka.DialLeader(ctx, s.topic, 0)
	if err != nil {
		return nil, fmt.Errorf("state store %s: %w", s.topic, err)
	}
	first, last, err := conn.ReadOffsets()
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("state store %s: read offsets: %w", s.topic, err)
	}
	if last <= first {
		return st, nil
	}
	r := s.kafka.Reader(kafka.ReaderConfig{Topic: s.topic, Partition: 0, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return nil, err
	}
	prefix, fleetPrefix := "p/"+flows+"/", "f/"+flows+"/"
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("state store %s: read: %w", s.topic, err)
		}
		key := string(m.Key)
		switch {
		case strings.HasPrefix(key, "h/"):
			histories[key[2:]] = m.Value
		case strings.HasPrefix(key, "s/") && len(m.Value) == 20:
			seqs[key[2:]] = seenSequence{seq: binary.BigEndian.Uint64(m.Value), partition: int32(binary.BigEndian.Uint32(m.Value[8:])),
				offset: int64(binary.BigEndian.Uint64(m.Value[12:]))}
		case strings.HasPrefix(key, "t/"):
			kind, device, _ := strings.Cut(key[2:], "/")
			if len(m.Value) == 0 { // closed
				delete(st.trust, trustKey(kind, device))
				break
			}
			var r trustRecord
			if err := json.Unmarshal(m.Value, &r); err != nil {
				return nil, fmt.Errorf("state store %s: trust episode at offset %d: %w", s.topic, m.Offset, err)
			}
			st.trust[trustKey(r.Kind, r.Device)] = &r
		case strings.HasPrefix(key, fleetPrefix):
			st.fleets[key[len(fleetPrefix):]] = m.Value
		case strings.HasPrefix(key, prefix):
			p, err := strconv.Atoi(key[len(prefix):])
			if err != nil {
				break
			}
			var cp partitionCheckpoint
			if err := json.Unmarshal(m.Value, &cp); err != nil {
				return nil, fmt.Errorf("state store %s: checkpoint at offset %d: %w", s.topic, m.Offset, err)
			}
			parts[p] = cp
		}
		if m.Offset >= last-1 {
			return st, nil
		}
	}
}

// loadRetrying is Load for the rebalance hooks, which cannot return an
// error: it retries with backoff (1 s, 2 s, … 16 s) while the broker is
// away, and gives up after five tries or when ctx ends.
func (s *StateStore) loadRetrying(ctx context.Context, flows string, log *slog.Logger) (*storedState, error) {
	var err error
	for attempt := range 5 {
		var st *storedState
		if st, err = s.Load(ctx, flows); err == nil {
			return st, nil
		}
		log.Warn("reading the state store failed; retrying", "err", err, "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second << attempt):
		}
	}
	return nil, err
}

// Close flushes and closes the writer.
func (s *StateStore) Close() error { return s.writer.Close() }

// EnsureStateTopic creates a topic of state (checkpoints, model artifacts,
// leaf hashes), one partition and compacted, if it does not exist. Its
// records never expire by age or size (retention.ms and retention.bytes
// -1), whatever the broker's defaults: compaction alone bounds it.
func EnsureStateTopic(ctx context.Context, cluster *kafkaconn.Cluster, replication int, topic string) error {
	err := createTopics(ctx, cluster, kafka.TopicConfig{
		Topic: topic, NumPartitions: 1, ReplicationFactor: replication,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"},
			{ConfigName: "retention.ms", ConfigValue: "-1"}, {ConfigName: "retention.bytes", ConfigValue: "-1"}},
	})
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("ensure state topic %s: %w", topic, err)
	}
	return nil
}
