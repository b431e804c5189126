package mcdist

import (
	"encoding/binary"
	"fmt"
)

// Payload limits.
const (
	// MaxBatch bounds the pages one request, zero or nack message names.
	MaxBatch = 128
	// MaxFragments bounds the fragments of one page.
	MaxFragments = 64
	// fragmentHeader is a fragment payload's length before its data.
	fragmentHeader = 14
	// reportSize is a rate report payload's length.
	reportSize = 20
)

// Request asks for pages, served in order.
type Request struct {
	// Retry is set when the client asked for one of these pages before.
	Retry bool
	Pages []uint64
}

// Fragment is part of a page: Index of Count equal slices (the last may
// be shorter) of the page's PageSize bytes.
type Fragment struct {
	Page uint64
	// Stream numbers the server's multicast packets (fragments and zero
	// messages) from 1, so receivers can count what they missed; 0 on
	// unicast packets.
	Stream uint32
	Index  uint8
	Count  uint8
	Data   []byte
}

// PageList names pages that are all zeros (TypeZero) or refused
// (TypeNack); Stream is as in Fragment (always 0 for a nack).
type PageList struct {
	Stream uint32
	Pages  []uint64
}

// Report is a receiver's rate report over its last interval.
type Report struct {
	// IntervalMillis is the length of the interval.
	IntervalMillis uint32
	// Bytes is the page payload received (fragments' data).
	Bytes uint64
	// Packets is the multicast packets received.
	Packets uint32
	// Expected is how many multicast packets the server's stream numbers
	// say were sent in the interval (0: unknown).
	Expected uint32
}

// fragmentSize is the data size of every fragment but the last when a
// page travels in count fragments.
func fragmentSize(count int) int { return (PageSize + count - 1) / count }

// fragmentCount is how many fragments a page needs so each packet fits
// maxDatagram bytes.
func fragmentCount(maxDatagram int) int {
	per := maxDatagram - Overhead - fragmentHeader
	return (PageSize + per - 1) / per
}

// fragmentSpan returns the byte range in the page of fragment index of
// count.
func fragmentSpan(index, count int) (off, end int) {
	size := fragmentSize(count)
	off, end = index*size, (index+1)*size
	return off, min(end, PageSize)
}

func appendPages(b []byte, pages []uint64) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(pages)))
	for _, p := range pages {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return b
}

// parsePages decodes a count and that many pages, which must fill b.
func parsePages(b []byte) ([]uint64, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: short page list", errMalformed)
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 || n > MaxBatch || len(b) != 2+8*n {
		return nil, fmt.Errorf("%w: page list of %d pages in %d bytes", errMalformed, n, len(b))
	}
	pages := make([]uint64, n)
	for i := range pages {
		pages[i] = binary.BigEndian.Uint64(b[2+8*i:])
	}
	return pages, nil
}

// AppendRequest appends r's payload encoding to b.
func AppendRequest(b []byte, r Request) []byte {
	flags := byte(0)
	if r.Retry {
		flags = 1
	}
	return appendPages(append(b, flags), r.Pages)
}

// ParseRequest decodes a request payload.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < 1 || b[0] > 1 {
		return Request{}, fmt.Errorf("%w: request flags", errMalformed)
	}
	pages, err := parsePages(b[1:])
	return Request{Retry: b[0] == 1, Pages: pages}, err
}

// AppendFragment appends f's payload encoding to b.
func AppendFragment(b []byte, f Fragment) []byte {
	b = binary.BigEndian.AppendUint64(b, f.Page)
	b = binary.BigEndian.AppendUint32(b, f.Stream)
	return append(append(b, f.Index, f.Count), f.Data...)
}

// ParseFragment decodes a fragment payload and checks that its data has
// exactly the length its index and count call for. Data aliases b.
func ParseFragment(b []byte) (Fragment, error) {
	if len(b) < fragmentHeader {
		return Fragment{}, fmt.Errorf("%w: short fragment", errMalformed)
	}
	f := Fragment{
		Page:   binary.BigEndian.Uint64(b),
		Stream: binary.BigEndian.Uint32(b[8:]),
		Index:  b[12],
		Count:  b[13],
		Data:   b[fragmentHeader:],
	}
	if f.Count == 0 || f.Count > MaxFragments || f.Index >= f.Count {
		return Fragment{}, fmt.Errorf("%w: fragment %d of %d", errMalformed, f.Index, f.Count)
	}
	if off, end := fragmentSpan(int(f.Index), int(f.Count)); off >= end || len(f.Data) != end-off {
		return Fragment{}, fmt.Errorf("%w: fragment %d of %d has %d bytes", errMalformed, f.Index, f.Count, len(f.Data))
	}
	return f, nil
}

// AppendPageList appends l's payload encoding to b.
func AppendPageList(b []byte, l PageList) []byte {
	return appendPages(binary.BigEndian.AppendUint32(b, l.Stream), l.Pages)
}

// ParsePageList decodes a zero or nack payload.
func ParsePageList(b []byte) (PageList, error) {
	if len(b) < 4 {
		return PageList{}, fmt.Errorf("%w: short page list", errMalformed)
	}
	pages, err := parsePages(b[4:])
	return PageList{Stream: binary.BigEndian.Uint32(b), Pages: pages}, err
}

// AppendReport appends r's payload encoding to b.
func AppendReport(b []byte, r Report) []byte {
	b = binary.BigEndian.AppendUint32(b, r.IntervalMillis)
	b = binary.BigEndian.AppendUint64(b, r.Bytes)
	b = binary.BigEndian.AppendUint32(b, r.Packets)
	return binary.BigEndian.AppendUint32(b, r.Expected)
}

// ParseReport decodes a rate report payload.
func ParseReport(b []byte) (Report, error) {
	if len(b) != reportSize {
		return Report{}, fmt.Errorf("%w: report of %d bytes", errMalformed, len(b))
	}
	r := Report{
		IntervalMillis: binary.BigEndian.Uint32(b),
		Bytes:          binary.BigEndian.Uint64(b[4:]),
		Packets:        binary.BigEndian.Uint32(b[12:]),
		Expected:       binary.BigEndian.Uint32(b[16:]),
	}
	if r.IntervalMillis == 0 {
		return Report{}, fmt.Errorf("%w: report over 0 ms", errMalformed)
	}
	return r, nil
}
