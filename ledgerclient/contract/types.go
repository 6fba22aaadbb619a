package contract

import "time"

// Device is a device's birth certificate.
type Device struct {
	ID           string `json:"id"`
	Profile      string `json:"profile"` // meter, camera, plc, gateway…
	Owner        string `json:"owner"`
	Manufacturer string `json:"manufacturer,omitempty"`
	// PublicKey is the device's Ed25519 public key (32 bytes; base64 in JSON)
	// that verifies its signed telemetry.
	PublicKey []byte   `json:"public_key,omitempty"`
	MACs      []string `json:"macs,omitempty"`
	IPs       []string `json:"ips,omitempty"`
	// Firmware is the hash of the firmware installed at manufacture.
	Firmware      string `json:"firmware,omitempty"`
	Status        string `json:"status"` // active or revoked
	RevokedReason string `json:"revoked_reason,omitempty"`
	// RevokedAt is when the revocation took effect: records from then on are
	// refused. It defaults to the revoking transaction's time; an operator
	// may date it back to when the device was lost.
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	RegisteredBy string    `json:"registered_by"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Device statuses.
const (
	DeviceActive  = "active"
	DeviceRevoked = "revoked"
)

// Firmware is an approved firmware image for one device profile.
type Firmware struct {
	Profile    string    `json:"profile"`
	Hash       string    `json:"hash"` // hex SHA-256 of the image
	Version    string    `json:"version,omitempty"`
	ApprovedBy string    `json:"approved_by"`
	ApprovedAt time.Time `json:"approved_at"`
}

// Anchor commits a contiguous range of one stream partition to a Merkle root.
type Anchor struct {
	ID             string    `json:"id"` // stream/partition/first-last, see AnchorID
	Stream         string    `json:"stream"`
	Partition      int32     `json:"partition"`
	FirstOffset    int64     `json:"first_offset"`
	LastOffset     int64     `json:"last_offset"`
	Count          int64     `json:"count"`
	MerkleRoot     string    `json:"merkle_root"` // hex SHA-256
	FirstTimestamp time.Time `json:"first_timestamp"`
	LastTimestamp  time.Time `json:"last_timestamp"`
	TxID           string    `json:"tx_id,omitempty"`
	AnchoredBy     string    `json:"anchored_by,omitempty"`
	AnchoredAt     time.Time `json:"anchored_at"`
}

// Alert kinds.
const (
	AlertBehaviour        = "behaviour"
	AlertRogueDevice      = "rogue-device"
	AlertRevokedDevice    = "revoked-device"
	AlertBadSignature     = "bad-signature"
	AlertFirmwareMismatch = "firmware-mismatch"
	AlertIntegrity        = "integrity"
)

// Contribution is one feature's part in a behaviour alert.
type Contribution struct {
	Feature  string  `json:"feature"`
	Value    float64 `json:"value"`
	Baseline float64 `json:"baseline"`
	Share    float64 `json:"share"`
}

// Evidence ties an alert to the records behind it.
type Evidence struct {
	Topic     string  `json:"topic,omitempty"`
	Partition int32   `json:"partition"`
	Offsets   []int64 `json:"offsets,omitempty"` // first and last offset of the window's records
	// More lists the window's records on other partitions of the topic,
	// when the device's records were not keyed to one partition and its
	// window was joined from several.
	More      []PartitionOffsets `json:"more,omitempty"`
	AnchorIDs []string           `json:"anchor_ids,omitempty"`
	Detail    string             `json:"detail,omitempty"`
}

// PartitionOffsets is the first and last offset of records on one
// partition.
type PartitionOffsets struct {
	Partition int32   `json:"partition"`
	Offsets   []int64 `json:"offsets"`
}

// Alert is an anomaly or trust finding, as produced to Kafka and recorded on
// the ledger. Its ID is deterministic (see AlertID), so a replay of the same
// records raises the same id and never a duplicate.
type Alert struct {
	ID          string         `json:"id"`
	Kind        string         `json:"kind"`
	DeviceID    string         `json:"device_id"`
	Profile     string         `json:"profile,omitempty"`
	WindowStart time.Time      `json:"window_start"`
	WindowEnd   time.Time      `json:"window_end"`
	Score       float64        `json:"score"`
	Confidence  string         `json:"confidence"`
	Features    []Contribution `json:"features,omitempty"`
	ModelHash   string         `json:"model_hash,omitempty"`
	Evidence    Evidence       `json:"evidence"`
	TxID        string         `json:"tx_id,omitempty"`
	RecordedAt  time.Time      `json:"recorded_at,omitzero"`
	Verdict     *Verdict       `json:"verdict,omitempty"`
	// Incident is set on incident events: the opening, updates and closing
	// of one device's episode of anomalous windows or trust findings. The
	// alert's window is then the incident's span so far and its score the
	// peak.
	Incident *Incident `json:"incident,omitempty"`
}

// Incident statuses.
const (
	IncidentOpened  = "opened"
	IncidentUpdated = "updated"
	IncidentClosed  = "closed"
)

// Incident identifies the incident an alert reports on, and where it stands.
type Incident struct {
	ID     string `json:"id"` // deterministic: see IncidentID
	Status string `json:"status"`
	Seq    int    `json:"seq"` // 0 for the opening, then one more per event
	// Windows is how many anomalous windows (or trust findings' windows)
	// the incident holds so far.
	Windows int `json:"windows"`
	// OpenedBy, on an opening, names the rule that opened it: "extreme"
	// (one window at the extreme level), "k_of_n" (K anomalous windows
	// among the last N), "persistent" or "sustained" (a lower level held
	// for several windows), "evidence" (the last few windows' levels
	// adding up); "fleet" for a profile's fleet episode (most of its
	// devices raised at once; the device is "profile:<name>", and Windows
	// counts, on its closing, the device incidents it grouped); "finding"
	// for a trust finding.
	OpenedBy string `json:"opened_by,omitempty"`
}

// Verdict values an analyst may set.
const (
	VerdictTruePositive  = "true-positive"
	VerdictFalsePositive = "false-positive"
	VerdictBenign        = "benign"
)

// Verdict is an analyst's judgement of an alert.
type Verdict struct {
	Value   string    `json:"value"`
	Note    string    `json:"note,omitempty"`
	Analyst string    `json:"analyst"`
	At      time.Time `json:"at"`
}

// Model is a registered model artifact.
type Model struct {
	Hash            string             `json:"hash"` // hex SHA-256 of the artifact file
	Profile         string             `json:"profile"`
	Algorithm       string             `json:"algorithm,omitempty"`
	TrainingAnchors []string           `json:"training_anchors,omitempty"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	RegisteredBy    string             `json:"registered_by"`
	RegisteredAt    time.Time          `json:"registered_at"`
	PromotedBy      string             `json:"promoted_by,omitempty"`
	PromotedAt      time.Time          `json:"promoted_at,omitzero"`
}
