package iforest

import (
	"errors"
	"fmt"
	"runtime"
)

// Config holds the hyperparameters of a forest. Its zero value is the
// configuration of the 2008 paper: 100 trees, ψ = 256, axis-parallel splits,
// seed 0, training on all cores.
type Config struct {
	// Trees is the number of isolation trees t. Zero means 100.
	Trees int
	// Subsample is ψ, the rows drawn without replacement for each tree. Zero
	// means 256; it is lowered to the row count when the data is smaller.
	Subsample int
	// Extension is the extension level of Hariri et al.: 0 grows the
	// classic axis-parallel trees, d−1 (for d features) the fully extended
	// hyperplane trees. Values in between zero out d−Extension−1 coordinates
	// of each random normal.
	Extension int
	// Seed makes training deterministic: the same data, configuration and
	// seed give the same forest, whatever the number of workers.
	Seed uint64
	// Workers is the number of goroutines that build trees. Zero means
	// runtime.GOMAXPROCS(0); 1 builds serially.
	Workers int
}

// withDefaults returns c with zero fields replaced by their documented defaults.
func (c Config) withDefaults() Config {
	if c.Trees == 0 {
		c.Trees = 100
	}
	if c.Subsample == 0 {
		c.Subsample = 256
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	return c
}

// Validate reports the first hyperparameter that cannot be used with data of
// the given number of features.
func (c Config) Validate(features int) error {
	c = c.withDefaults()
	switch {
	case features < 1:
		return errors.New("iforest: data has no features")
	case c.Trees < 1:
		return fmt.Errorf("iforest: trees must be positive, got %d", c.Trees)
	case c.Subsample < 2:
		return fmt.Errorf("iforest: subsample must be at least 2, got %d", c.Subsample)
	case c.Extension < 0 || c.Extension > features-1:
		return fmt.Errorf("iforest: extension must be in [0, %d] for %d features, got %d", features-1, features, c.Extension)
	case c.Workers < 1:
		return fmt.Errorf("iforest: workers must be positive, got %d", c.Workers)
	}
	return nil
}
