package simulator

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
)

// TestLongTrustScheduleKeepsHalfTheFleet plays many more trust scenarios
// than a small fleet has devices, against a real embedded ledger: the
// schedule never stalls, every scenario is either played or skipped, and
// revocations stop before more than half of the fleet is off the network.
func TestLongTrustScheduleKeepsHalfTheFleet(t *testing.T) {
	ctx := context.Background()
	led, err := embedded.Open(filepath.Join(t.TempDir(), "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	as := func(r contract.Role) *ledgerclient.Client {
		return ledgerclient.New(led.Client(embedded.LocalCaller(r)))
	}
	s := newTestSim(t, 9)
	s.Fleet = s.Fleet[:6]
	if err := s.Register(ctx, as(contract.RoleManufacturer), as(contract.RoleOperator)); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	const scheduled = 60
	done := make(chan error, 1)
	go func() {
		for i := range scheduled {
			minute := start.Add(time.Duration(i) * 10 * time.Minute)
			s.retire(minute)
			if err := s.scheduleTrust(ctx, minute); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("trust scheduling stalled")
	}
	if got := len(s.trust) + s.trustSkipped; got != scheduled {
		t.Fatalf("%d scenarios played or skipped, want %d", got, scheduled)
	}
	revoked := 0
	for _, e := range s.trust {
		if e.revoked {
			revoked++
		}
	}
	if revoked == 0 || 2*revoked > len(s.Fleet) {
		t.Fatalf("%d of %d devices revoked; want some, and at most half", revoked, len(s.Fleet))
	}
	t.Logf("%d scenarios played, %d skipped, %d devices revoked", len(s.trust), s.trustSkipped, revoked)
}

func TestHideBytesOutRewritesOnlyThatField(t *testing.T) {
	in := []byte(`{"device_id":"plc-0003","bytes_out":48213,"bytes_in":410}`)
	got := string(hideBytesOut(in))
	if want := `{"device_id":"plc-0003","bytes_out":1,"bytes_in":410}`; got != want {
		t.Fatalf("hideBytesOut = %s, want %s", got, want)
	}
	if string(in) != `{"device_id":"plc-0003","bytes_out":48213,"bytes_in":410}` {
		t.Fatal("hideBytesOut changed its input")
	}
	if other := hideBytesOut([]byte(`{"x":1}`)); string(other) == `{"x":1}` {
		t.Fatal("a record without bytes_out was left unchanged")
	}
}
