package descriptor

import "testing"

// BenchmarkMarshalUnmarshalQ35 encodes and decodes a 1 GiB q35-like
// descriptor (see q35) and reports its encoded size.
func BenchmarkMarshalUnmarshalQ35(b *testing.B) {
	d := q35()
	var size int
	for b.Loop() {
		enc, err := d.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
		size = len(enc)
	}
	b.ReportMetric(float64(size), "bytes/descriptor")
}
