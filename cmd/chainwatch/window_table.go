package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline"
)

// A window table is what `features export` writes: one row per device
// window of verified history, in the columns below, then one float64
// column per feature of the schema (features.Names), in schema order.
// Parquet and CSV carry the same columns in the same order.
var windowColumns = []string{"device_id", "profile", "window_start", "window_end", "partition", "first_offset", "last_offset",
	"anchor_ids", "label", "label_source", "label_detail"}

// windowRow is one row before it is written.
type windowRow struct {
	w     *pipeline.HistoryWindow
	label pipeline.Label
}

type tableWriter interface {
	Write(r windowRow) error
	Close() error
}

// newTableWriter writes to path in the format out's extension picks.
func newTableWriter(out, path string) (tableWriter, error) {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".parquet":
		return newParquetTable(path)
	case ".csv":
		return newCSVTable(path)
	default:
		return nil, usagef("--out %s: the extension picks the format: .parquet or .csv", out)
	}
}

// csvTable writes RFC 4180 CSV: timestamps in RFC 3339 with milliseconds
// (UTC), an empty label when the window is unlabelled, floats in the
// shortest form that reads back exactly.
type csvTable struct {
	f   *os.File
	buf *bufio.Writer
	w   *csv.Writer
	rec []string
}

func newCSVTable(path string) (*csvTable, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	t := &csvTable{f: f, buf: bufio.NewWriterSize(f, 1<<20)}
	t.w = csv.NewWriter(t.buf)
	if err := t.w.Write(append(append([]string(nil), windowColumns...), features.Names[:]...)); err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

const csvTime = "2006-01-02T15:04:05.000Z07:00"

func (t *csvTable) Write(r windowRow) error {
	w := r.w
	lab := ""
	if r.label.OK {
		lab = strconv.Itoa(int(r.label.Value))
	}
	t.rec = append(t.rec[:0], w.Device, w.Profile, w.Start.UTC().Format(csvTime), w.End.UTC().Format(csvTime),
		strconv.Itoa(int(w.Partition)), strconv.FormatInt(w.FirstOffset, 10), strconv.FormatInt(w.LastOffset, 10),
		strings.Join(w.Anchors, " "), lab, r.label.Source, r.label.Detail)
	for _, v := range w.Vector {
		t.rec = append(t.rec, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return t.w.Write(t.rec)
}

func (t *csvTable) Close() error {
	t.w.Flush()
	if err := t.w.Error(); err != nil {
		t.f.Close()
		return err
	}
	if err := t.buf.Flush(); err != nil {
		t.f.Close()
		return err
	}
	return t.f.Close()
}

// parquetTable writes Parquet through parquet-go, zstd-compressed, with a
// schema built from the columns above: strings as UTF-8 byte arrays,
// timestamps as INT64 milliseconds adjusted to UTC, the label as an
// optional INT32. The row type is a struct made at run time from the
// feature schema, so that the columns keep their order (a parquet.Group
// would sort them by name).
type parquetTable struct {
	f   *os.File
	w   *parquet.Writer
	typ reflect.Type
	row reflect.Value
}

func newParquetTable(path string) (*parquetTable, error) {
	fields := []reflect.StructField{
		{Name: "DeviceID", Type: reflect.TypeFor[string](), Tag: `parquet:"device_id"`},
		{Name: "Profile", Type: reflect.TypeFor[string](), Tag: `parquet:"profile"`},
		{Name: "WindowStart", Type: reflect.TypeFor[time.Time](), Tag: `parquet:"window_start,timestamp(millisecond)"`},
		{Name: "WindowEnd", Type: reflect.TypeFor[time.Time](), Tag: `parquet:"window_end,timestamp(millisecond)"`},
		{Name: "Partition", Type: reflect.TypeFor[int32](), Tag: `parquet:"partition"`},
		{Name: "FirstOffset", Type: reflect.TypeFor[int64](), Tag: `parquet:"first_offset"`},
		{Name: "LastOffset", Type: reflect.TypeFor[int64](), Tag: `parquet:"last_offset"`},
		{Name: "AnchorIDs", Type: reflect.TypeFor[string](), Tag: `parquet:"anchor_ids"`},
		{Name: "Label", Type: reflect.TypeFor[*int32](), Tag: `parquet:"label,optional"`},
		{Name: "LabelSource", Type: reflect.TypeFor[string](), Tag: `parquet:"label_source"`},
		{Name: "LabelDetail", Type: reflect.TypeFor[string](), Tag: `parquet:"label_detail"`},
	}
	for i, name := range features.Names {
		fields = append(fields, reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[float64](), Tag: reflect.StructTag(`parquet:"` + name + `"`)})
	}
	typ := reflect.StructOf(fields)
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	schema := parquet.SchemaOf(reflect.New(typ).Interface())
	w := parquet.NewWriter(f, schema, parquet.Compression(&zstd.Codec{}),
		parquet.CreatedBy("chainwatch", "", ""),
		parquet.KeyValueMetadata("chainwatch.feature_schema", strconv.Itoa(features.SchemaVersion)))
	return &parquetTable{f: f, w: w, typ: typ, row: reflect.New(typ)}, nil
}

func (t *parquetTable) Write(r windowRow) error {
	w, v := r.w, t.row.Elem()
	v.Field(0).SetString(w.Device)
	v.Field(1).SetString(w.Profile)
	v.Field(2).Set(reflect.ValueOf(w.Start.UTC()))
	v.Field(3).Set(reflect.ValueOf(w.End.UTC()))
	v.Field(4).SetInt(int64(w.Partition))
	v.Field(5).SetInt(w.FirstOffset)
	v.Field(6).SetInt(w.LastOffset)
	v.Field(7).SetString(strings.Join(w.Anchors, " "))
	if r.label.OK {
		lab := r.label.Value
		v.Field(8).Set(reflect.ValueOf(&lab))
	} else {
		v.Field(8).SetZero()
	}
	v.Field(9).SetString(r.label.Source)
	v.Field(10).SetString(r.label.Detail)
	for i, x := range w.Vector {
		v.Field(len(windowColumns) + i).SetFloat(x)
	}
	return t.w.Write(t.row.Interface())
}

func (t *parquetTable) Close() error {
	if err := t.w.Close(); err != nil {
		t.f.Close()
		return err
	}
	return t.f.Close()
}
