package pipeline

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Labels marks device windows anomalous or normal from two sources: a
// ground-truth CSV (the simulator's and the campus generator's:
// device_id,profile,scenario,start,end[,intensity]) and analysts' verdicts
// on the ledger's behaviour alerts. A ground-truth file is complete — a
// window it does not name is normal — and takes precedence; a verdict
// labels the windows of the alert it judges (true_positive: anomalous;
// false_positive or benign: normal). Other windows are unlabelled.
type Labels struct {
	truth    map[string][]labelSpan
	verdicts map[string][]labelSpan
	complete bool // a ground truth was given
}

type labelSpan struct {
	start, end time.Time
	anomalous  bool
	detail     string
}

// Label is a window's label: Value 1 anomalous, 0 normal; OK false when
// the window is unlabelled. Source says where it came from
// ("ground_truth", "verdict"), Detail the scenario or the verdict and note.
type Label struct {
	Value  int32
	OK     bool
	Source string
	Detail string
}

// Anomalous reports a window labelled anomalous.
func (l Label) Anomalous() bool { return l.OK && l.Value == 1 }

// Of is the label of a device window.
func (l *Labels) Of(device string, start, end time.Time) Label {
	if l == nil {
		return Label{}
	}
	for _, s := range l.truth[device] {
		if s.start.Before(end) && start.Before(s.end) {
			return Label{Value: 1, OK: true, Source: "ground_truth", Detail: s.detail}
		}
	}
	if l.complete {
		return Label{Value: 0, OK: true, Source: "ground_truth"}
	}
	for _, s := range l.verdicts[device] {
		if s.start.Before(end) && start.Before(s.end) {
			v := Label{OK: true, Source: "verdict", Detail: s.detail}
			if s.anomalous {
				v.Value = 1
			}
			return v
		}
	}
	return Label{}
}

// LoadLabels reads the ground-truth file (if named) and the verdicts on the
// ledger's behaviour alerts.
func LoadLabels(ctx context.Context, ledger *ledgerclient.Client, truthPath string) (*Labels, error) {
	l := &Labels{truth: map[string][]labelSpan{}, verdicts: map[string][]labelSpan{}}
	if truthPath != "" {
		f, err := os.Open(truthPath)
		if err != nil {
			return nil, fmt.Errorf("ground truth: %w", err)
		}
		defer f.Close()
		if err := l.readTruth(f); err != nil {
			return nil, fmt.Errorf("ground truth %s: %w", truthPath, err)
		}
		l.complete = true
	}
	alerts, err := ledger.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertBehaviour})
	if err != nil {
		return nil, fmt.Errorf("verdicts: %w", err)
	}
	for _, a := range alerts {
		if a.Verdict == nil {
			continue
		}
		l.verdicts[a.DeviceID] = append(l.verdicts[a.DeviceID], labelSpan{start: a.WindowStart, end: a.WindowEnd,
			anomalous: a.Verdict.Value == contract.VerdictTruePositive, detail: strings.TrimSpace(a.Verdict.Value + " " + a.Verdict.Note)})
	}
	return l, nil
}

func (l *Labels) readTruth(r io.Reader) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	for _, need := range []string{"device_id", "scenario", "start", "end"} {
		if _, ok := col[need]; !ok {
			return fmt.Errorf("header %v has no %q column", header, need)
		}
	}
	for row := 2; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		start, err1 := time.Parse(time.RFC3339, rec[col["start"]])
		end, err2 := time.Parse(time.RFC3339, rec[col["end"]])
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("row %d: %w", row, err)
		}
		// A device an attack probed (a scenario ending in _victim) is
		// labelled too: its windows carry the attack's inbound traffic.
		device := rec[col["device_id"]]
		l.truth[device] = append(l.truth[device], labelSpan{start: start, end: end, anomalous: true, detail: rec[col["scenario"]]})
	}
}
