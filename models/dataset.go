package models

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Dataset is a numeric feature matrix read from CSV, with optional labels.
type Dataset struct {
	Names  []string  // feature names from the header, in column order
	X      []float64 // row-major, len(Names) wide
	Labels []bool    // true = anomaly; nil without a label column
}

// Rows is the number of rows.
func (d *Dataset) Rows() int { return len(d.X) / max(len(d.Names), 1) }

// ReadCSV reads a CSV whose header names the columns. labelColumn, if not
// empty, names the column holding labels: positive is the label value of an
// anomaly; when positive is empty, "1", "true", "yes", "anomaly" and
// "anomalous" (any case) mark anomalies. Every other column must be
// numeric; the first one that is not is refused with its name, row and value.
func ReadCSV(r io.Reader, labelColumn, positive string) (*Dataset, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("csv: header: %w", err)
	}
	header = slices.Clone(header)
	label := -1
	ds := &Dataset{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		if h == labelColumn && labelColumn != "" {
			label = i
			continue
		}
		ds.Names = append(ds.Names, h)
	}
	if labelColumn != "" && label < 0 {
		return nil, fmt.Errorf("csv: label column %q is not in the header %v", labelColumn, header)
	}
	if len(ds.Names) == 0 {
		return nil, errors.New("csv: no feature columns")
	}
	if label >= 0 {
		ds.Labels = []bool{}
	}
	for row := 2; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("csv: %w", err)
		}
		for i, v := range rec {
			v = strings.TrimSpace(v)
			if i == label {
				ds.Labels = append(ds.Labels, isPositive(v, positive))
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				hint := ""
				if labelColumn == "" {
					hint = " (if it is the label, pass --label-column " + header[i] + ")"
				}
				return nil, fmt.Errorf("csv: column %q is not numeric: row %d has %q%s", header[i], row, v, hint)
			}
			ds.X = append(ds.X, f)
		}
	}
	if ds.Rows() == 0 {
		return nil, errors.New("csv: no data rows")
	}
	return ds, nil
}

func isPositive(v, positive string) bool {
	if positive != "" {
		return v == positive
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "anomaly", "anomalous":
		return true
	}
	return false
}
