package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime/pprof"
)

// stageRun is the life cycle the stages share: launch runs the stage's loop
// in a goroutine, Done and Err tell when and why it ended, and a stop
// requested through the context is not an error.
//
// start runs a stage's set-up under the pprof label stage=<name>: the
// goroutines it creates, kafka-go's fetchers included, inherit the label,
// so CPU profiles (and Pyroscope) attribute time to stages.
type stageRun struct {
	name string
	log  *slog.Logger
	done chan struct{}
	err  error
}

func (r *stageRun) start(ctx context.Context, setup func(context.Context)) {
	pprof.Do(ctx, pprof.Labels("stage", r.name), setup)
}

func (r *stageRun) launch(ctx context.Context, loop func(context.Context) error) {
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		err := loop(ctx)
		if ctx.Err() != nil || errors.Is(err, io.EOF) {
			err = nil
		}
		r.err = err
		if err != nil {
			r.log.Error(r.name+" stage stopped", "err", err)
		}
	}()
}

// Done is closed when the stage has stopped.
func (r *stageRun) Done() <-chan struct{} { return r.done }

// Err is why the stage stopped: nil while it runs and after a requested stop.
func (r *stageRun) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// wait blocks until the stage has stopped or ctx ends.
func (r *stageRun) wait(ctx context.Context) error {
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
