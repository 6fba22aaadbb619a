package pipeline

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// fleetJudge is one profile's fleet episode (incidents.Fleet) with what
// the detector needs to decide which device incidents the episode explains:
// the direction the profile moved in. The detector and the offline
// judgement share it, so that both group alike.
//
// A device whose deviations went where its peers' went is explained by the
// episode, however far it went; one that also moved elsewhere — an upload
// on a badge reader whose flows rose with every other badge reader's — is
// not. The test projects the window's deviations r (step 3 of
// models/behaviour.go) off the episode's direction u, the mean deviation of
// the raised windows that made and fed the episode, and judges what is left,
// r − (r·u)u/|u|², with the model like any window: explained when that
// would count towards no incident rule. It is the peer-group comparison of
// Bolton & Hand (2001) made along the one direction the peers share, so
// that a device judged on a shifted profile is judged on everything but
// the shift.
//
// Peers vouch for how much a device does, never for whom it talks to or
// for traffic shaped like an attack. A schedule, a load change or a
// configuration pushed to every device changes the volume of what the
// devices already do; an outbreak — a botnet's flood from most cameras, a
// worm, a coordinated upload — is most of a profile meeting hosts new to
// it, or sending floods' and scans' small-packet and failed flows, at once.
// So the projection leaves the features that count new hosts and ports
// (new_dst, new_internal_dst, new_dst_ports, first_contact_windows_1h,
// new_dst_recurrence) and those flood- and scan-shaped flows
// (small_packet_flows, failed_flows) out of the direction and in what is
// judged (unexplained); and an episode most of whose raised windows met
// more new hosts or ports, or sent more of those
// flows, than their device usually does (novelWindow) explains nothing:
// its devices are reported one by one, as with episodes off. Without this
// an outbreak on 60 % of a profile was absorbed — its devices' incidents
// unreported and their baselines taught the attack — and attacks of the
// simulator-outbreak benchmark fleet were caught within 3 windows in as few
// as 0.63 of cases against 0.90 with episodes off (docs/DETECTION.md).
type fleetJudge struct {
	incidents.Fleet
	// dir sums the deviations of the raised windows of the newest
	// episode's opening batch, and of its absorbed devices' raised
	// windows while it is open; n counts them.
	dir [models.ResidualDims]float64
	n   int
	// novel counts those of the n windows that met strangers or sent
	// attack-shaped traffic (novelWindow).
	novel int
	// drivers is what drove the raised windows of the newest episode's
	// opening minute (models.Drivers): what its opening alert shows the
	// profile did. Not checkpointed: an episode opened before a restart is
	// reported after it without features.
	drivers models.Drivers

	rest   [models.ResidualDims]float64
	score  [1]float64
	events []incidents.Event
}

// unexplained marks the features an episode never explains: contacts
// with hosts or ports new to the device, and flood- and scan-shaped flows.
var unexplained = [models.ResidualDims]bool{features.NewDst: true, features.NewInternalDst: true, features.NewDstPorts: true,
	features.FirstContactWindows1h: true, features.NewDstRecurrence: true, features.SmallPacketFlows: true, features.FailedFlows: true}

// raised is whether a judged window counts as raised for the fleet
// episode: anomalous, or elevated to the sustained rule's level.
func raised(j models.Judgement) bool { return j.Anomalous || j.Elevated }

// tally counts the windows of a batch (rows: their deviations, ResidualDims
// each; js: their judgements) in the episode, in order, and hands emit the
// episode's closings (incidents.Fleet.Observe) with the batch row that made
// each. An opening sets the episode's direction from the batch's raised
// windows of the window it opened on: the whole batch is judged before it
// is tallied. explain (nil: none) adds a batch row's window to the
// episode's drivers.
func (f *fleetJudge) tally(rule incidents.Rule, index []int64, rows []float64, novel []bool, js []models.Judgement, explain func(i int, d *models.Drivers), emit func(k int, ev incidents.Event)) {
	const dims = models.ResidualDims
	for k, j := range js {
		wasOpen := f.Open()
		f.events = f.Observe(rule, index[k], raised(j), f.events[:0])
		if !wasOpen && f.Open() {
			first := f.Opening().First
			f.dir, f.n, f.novel, f.drivers = [dims]float64{}, 0, 0, models.Drivers{}
			for i, oj := range js {
				if raised(oj) && index[i] == first {
					f.add(rows[i*dims:(i+1)*dims], novel[i])
					if explain != nil {
						explain(i, &f.drivers)
					}
				}
			}
		}
		for _, ev := range f.events {
			emit(k, ev)
		}
	}
}

func (f *fleetJudge) add(r []float64, novel bool) {
	for i := range f.dir {
		f.dir[i] += r[i]
	}
	f.n++
	if novel {
		f.novel++
	}
}

// novelWindow reports whether a window (its vector v, deviations r from
// its device's baseline b) met more hosts or ports new to the device than
// the device usually does, or sent small-packet or failed flows in a larger
// share than usual (models.Model.Outgrew): what an outbreak's windows do
// and a change of volume's do not. (Any rise of those flows was counted
// before: a profile-wide step of volume, which raises them with every
// other flow, was taken for an outbreak and explained nothing.)
func novelWindow(m *models.Model, b *models.DeviceBaseline, v *features.Vector, r []float64) bool {
	return r[features.NewDst] > 0 || r[features.NewInternalDst] > 0 || r[features.NewDstPorts] > 0 ||
		m.Outgrew(b, v, features.SmallPacketFlows) || m.Outgrew(b, v, features.FailedFlows)
}

// explained reports whether the episode explains a window with deviations
// r: its deviations off the episode's direction, the unexplained features
// whole, would count towards none of rule's openings. Without a direction
// (none opened since a restart), or when most of the episode's windows
// were novel, nothing is explained.
func (f *fleetJudge) explained(rule incidents.Rule, m *models.Model, r []float64) bool {
	return f.explains(rule, m, r, true)
}

// stillExplained reports whether the episode still explains the window of
// an incident it absorbed: what is left of the window off the episode's
// direction is not anomalous. A window left merely elevated, or with a
// share of the evidence rule's, is what ordinary windows show now and then
// and opens nothing alone; released on it, a device whose baseline had not
// yet followed the profile's step was reported on its next raised window
// (simulator-step, docs/DETECTION.md).
func (f *fleetJudge) stillExplained(rule incidents.Rule, m *models.Model, r []float64) bool {
	return f.explains(rule, m, r, false)
}

// explains is explained (strict: the rest counts towards no rule) and
// stillExplained (the rest is not anomalous).
func (f *fleetJudge) explains(rule incidents.Rule, m *models.Model, r []float64, strict bool) bool {
	if f.n == 0 || 2*f.novel > f.n {
		return false
	}
	norm, dot := 0.0, 0.0
	for i, u := range f.dir {
		if unexplained[i] {
			continue
		}
		norm += u * u
		dot += r[i] * u
	}
	if norm == 0 {
		return false
	}
	for i, u := range f.dir {
		f.rest[i] = r[i]
		if !unexplained[i] {
			f.rest[i] -= dot / norm * u
		}
	}
	if err := m.Forest().ScoreBatch(f.score[:], f.rest[:]); err != nil {
		return false
	}
	j := m.Judge(f.rest[:], f.score[0])
	if !strict {
		return !j.Anomalous
	}
	return !counts(rule, j)
}

// counts reports whether a judged window counts towards any of rule's
// openings: anomalous, elevated, persistent, or carrying at least its even
// share of the evidence rule's.
func counts(rule incidents.Rule, j models.Judgement) bool {
	return j.Anomalous || j.Elevated || j.Persistent || (rule.EN > 0 && j.Evidence*float64(rule.EN) >= 1)
}

// advance moves a device's incident state st with its window (w, judged
// j, deviations r) and returns the events to report, whether the window's
// incident joined the episode (and, opening, whether it was the first to,
// so that the episode's opening is to be reported now), and whether the
// window is to teach the device's baseline. An absorbed incident whose
// window the episode no longer explains — what is left of it is anomalous
// (stillExplained) — is released from it (closed without a report; the
// window's rules may open one of the device's own at once); an incident
// the window opens while the episode is open joins it if the episode
// explains the window, whichever rule opened it. (An extreme
// window was always reported before; a profile-wide step of volume then
// paged every device whose first window of it was extreme, and a
// profile-wide attack is reported device by device anyway, its windows
// novel or off the profile's direction.) The window teaches the baseline if it is not
// anomalous or, while the episode is open, if its incident is absorbed or
// the episode explains it: the peers vouch for it, and the device follows
// the profile's new normal while the episode lasts rather than for hours
// after it.
func (f *fleetJudge) advance(rule incidents.Rule, m *models.Model, st *incidents.State, w incidents.Window, j models.Judgement, r []float64, novel bool, out []incidents.Event) (events []incidents.Event, joined, opening, learn bool) {
	released := false
	if st.Absorbed() && !f.stillExplained(rule, m, r) {
		st.Release()
		released = true
	}
	absorbed := st.Absorbed()
	out = st.Observe(rule, w, out)
	join := !released && f.Open() && len(out) > 0 && out[len(out)-1].Status == incidents.Opened && f.explained(rule, m, r)
	events, joined, opening = f.Reported(st, absorbed, join, out)
	inEpisode := f.Open() && st.Absorbed()
	if inEpisode && raised(j) {
		f.add(r, novel)
		f.Hold(w.Index)
	}
	// An incident of the device's own that the episode explains now — one
	// opened, and reported, in the episode's first minute on a window
	// judged before the minute's tally showed most of the profile raised
	// (a device whose first record of the minute came after its peers'
	// windows had been judged, barrier.go) — is vouched for as well: without this its windows, all
	// anomalous, never taught its baseline, and it stayed open for hours
	// after its peers' had followed (simulator-step, docs/DETECTION.md).
	vouched := f.Open() && !st.Absorbed() && st.Open() && j.Anomalous && f.stillExplained(rule, m, r)
	return events, joined, opening, !j.Anomalous || inEpisode || vouched
}

// fleetJudgeEncodingSize is the length of fleetJudge.MarshalBinary's output.
const fleetJudgeEncodingSize = incidents.FleetEncodingSize + 8*models.ResidualDims + 4 + 4

// MarshalBinary encodes the episode and its direction for the state store,
// so that a restarted service carries on an open episode: without its
// direction nothing would be explained, and every device incident it had
// absorbed whose window is still raised would be reported.
func (f *fleetJudge) MarshalBinary() ([]byte, error) {
	b, err := f.Fleet.MarshalBinary()
	if err != nil {
		return nil, err
	}
	for _, v := range f.dir {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(f.n))
	return binary.BigEndian.AppendUint32(b, uint32(f.novel)), nil
}

// UnmarshalBinary restores what MarshalBinary encoded.
func (f *fleetJudge) UnmarshalBinary(b []byte) error {
	if len(b) != fleetJudgeEncodingSize {
		return fmt.Errorf("fleet episode checkpoint of %d bytes, want %d: damaged, or of another feature schema", len(b), fleetJudgeEncodingSize)
	}
	var g fleetJudge
	if err := g.Fleet.UnmarshalBinary(b[:incidents.FleetEncodingSize]); err != nil {
		return err
	}
	p := b[incidents.FleetEncodingSize:]
	for i := range g.dir {
		g.dir[i] = math.Float64frombits(binary.BigEndian.Uint64(p[8*i:]))
	}
	p = p[8*len(g.dir):]
	g.n, g.novel = int(binary.BigEndian.Uint32(p)), int(binary.BigEndian.Uint32(p[4:]))
	*f = g
	return nil
}
