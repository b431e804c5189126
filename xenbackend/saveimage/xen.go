package saveimage

import (
	"errors"
	"fmt"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// The Xen save-image format, each constant named after the C one it mirrors
// (in the file the comment names).
const (
	pageShift = 12 // XC_PAGE_SHIFT
	pageSize  = 1 << pageShift

	// tools/xl/xl.h
	xlMagic                  = "Xen saved domain, xl format\n \x00 \r" // savefileheader_magic[32]
	xlHeaderSize             = 32 + 4*4                                // struct save_file_header
	xlByteorder              = 0x01020304                              // SAVEFILE_BYTEORDER_VALUE
	xlMandatoryFlagJSON      = 1 << 0                                  // XL_MANDATORY_FLAG_JSON
	xlMandatoryFlagStreamV2  = 1 << 1                                  // XL_MANDATORY_FLAG_STREAMv2
	xlMandatoryFlagAll       = xlMandatoryFlagJSON | xlMandatoryFlagStreamV2
	xlOptionalConfigLenBytes = 4 // the u32 config length at the start of the optional data

	// tools/libs/light/libxl_sr_stream_format.h
	libxlHeaderSize           = 16                 // struct libxl__sr_hdr
	libxlIdent                = 0x4c6962786c466d74 // RESTORE_STREAM_IDENT, "LibxlFmt"
	libxlVersion              = 2                  // RESTORE_STREAM_VERSION
	libxlOptBigEndian         = 1 << 0             // RESTORE_OPT_BIG_ENDIAN
	libxlRecEnd               = 0                  // REC_TYPE_END
	libxlRecLibxcContext      = 1                  // REC_TYPE_LIBXC_CONTEXT
	libxlRecEmulatorXenstore  = 2                  // REC_TYPE_EMULATOR_XENSTORE_DATA
	libxlRecEmulatorContext   = 3                  // REC_TYPE_EMULATOR_CONTEXT
	libxlRecCheckpointEnd     = 4                  // REC_TYPE_CHECKPOINT_END
	libxlRecCheckpointState   = 5                  // REC_TYPE_CHECKPOINT_STATE
	libxlEmulatorHeaderSize   = 8                  // struct libxl__sr_emulator_hdr
	recHeaderSize             = 8                  // struct libxl__sr_rec_hdr, struct xc_sr_rhdr
	recAlign                  = 8                  // REC_ALIGN (1 << REC_ALIGN_ORDER in libxl)
	libxcImageHeaderSize      = 24                 // struct xc_sr_ihdr
	libxcDomainHeaderSize     = 16                 // struct xc_sr_dhdr
	libxcMarker               = ^uint64(0)         // IHDR_MARKER
	libxcID                   = 0x58454E46         // IHDR_ID, "XENF"
	libxcOptBigEndian         = 1 << 0             // IHDR_OPT_BIG_ENDIAN
	libxcVersionMin           = 2                  // oldest version read_headers accepts
	libxcVersionMax           = 3                  // the version Xen 4.17 writes
	libxcRecLengthMax         = 128 << 20          // REC_LENGTH_MAX
	pageDataHeaderSize        = 8                  // struct xc_sr_rec_page_data_header
	pageDataPFNMask           = 1<<52 - 1          // PAGE_DATA_PFN_MASK
	pageDataTypeShift         = 60                 // PAGE_DATA_TYPE_MASK is 0xf << 60
	libxcRecTypeOptional      = 0x80000000         // REC_TYPE_OPTIONAL
	libxcRecTypeLastMandatory = libxcRecX86MSRPolicy
)

// libxc record types (tools/libs/guest/xg_sr_stream_format.h, REC_TYPE_*).
const (
	libxcRecEnd                    = 0x00
	libxcRecPageData               = 0x01
	libxcRecX86PVInfo              = 0x02
	libxcRecX86PVP2MFrames         = 0x03
	libxcRecX86PVVCPUBasic         = 0x04
	libxcRecX86PVVCPUExtended      = 0x05
	libxcRecX86PVVCPUXsave         = 0x06
	libxcRecSharedInfo             = 0x07
	libxcRecX86TSCInfo             = 0x08
	libxcRecHVMContext             = 0x09
	libxcRecHVMParams              = 0x0a
	libxcRecToolstack              = 0x0b
	libxcRecX86PVVCPUMSRs          = 0x0c
	libxcRecVerify                 = 0x0d
	libxcRecCheckpoint             = 0x0e
	libxcRecCheckpointDirtyPFNList = 0x0f
	libxcRecStaticDataEnd          = 0x10
	libxcRecX86CPUIDPolicy         = 0x11
	libxcRecX86MSRPolicy           = 0x12
)

var libxcRecNames = [...]string{
	libxcRecEnd:                    "END",
	libxcRecPageData:               "PAGE_DATA",
	libxcRecX86PVInfo:              "X86_PV_INFO",
	libxcRecX86PVP2MFrames:         "X86_PV_P2M_FRAMES",
	libxcRecX86PVVCPUBasic:         "X86_PV_VCPU_BASIC",
	libxcRecX86PVVCPUExtended:      "X86_PV_VCPU_EXTENDED",
	libxcRecX86PVVCPUXsave:         "X86_PV_VCPU_XSAVE",
	libxcRecSharedInfo:             "SHARED_INFO",
	libxcRecX86TSCInfo:             "X86_TSC_INFO",
	libxcRecHVMContext:             "HVM_CONTEXT",
	libxcRecHVMParams:              "HVM_PARAMS",
	libxcRecToolstack:              "TOOLSTACK",
	libxcRecX86PVVCPUMSRs:          "X86_PV_VCPU_MSRS",
	libxcRecVerify:                 "VERIFY",
	libxcRecCheckpoint:             "CHECKPOINT",
	libxcRecCheckpointDirtyPFNList: "CHECKPOINT_DIRTY_PFN_LIST",
	libxcRecStaticDataEnd:          "STATIC_DATA_END",
	libxcRecX86CPUIDPolicy:         "X86_CPUID_POLICY",
	libxcRecX86MSRPolicy:           "X86_MSR_POLICY",
}

var libxlRecNames = [...]string{
	libxlRecEnd:              "END",
	libxlRecLibxcContext:     "LIBXC_CONTEXT",
	libxlRecEmulatorXenstore: "EMULATOR_XENSTORE_DATA",
	libxlRecEmulatorContext:  "EMULATOR_CONTEXT",
	libxlRecCheckpointEnd:    "CHECKPOINT_END",
	libxlRecCheckpointState:  "CHECKPOINT_STATE",
}

// recordName names a record for error messages: "libxc PAGE_DATA record
// (type 0x1)".
func recordName(layer string, typ uint32) string {
	names := libxcRecNames[:]
	if layer == "libxl" {
		names = libxlRecNames[:]
	}
	name := "unknown"
	switch {
	case typ < uint32(len(names)):
		name = names[typ]
	case layer == "libxc" && typ&libxcRecTypeOptional != 0:
		name = "optional"
	}
	return fmt.Sprintf("%s %s record (type %#x)", layer, name, typ)
}

// Page types, XEN_DOMCTL_PFINFO_* (xen/include/public/domctl.h) shifted
// down to the top nibble of a PAGE_DATA pfn entry.
const (
	pfinfoNotab  = 0x0 // XEN_DOMCTL_PFINFO_NOTAB
	pfinfoL1tab  = 0x1 // XEN_DOMCTL_PFINFO_L1TAB
	pfinfoL4tab  = 0x4 // XEN_DOMCTL_PFINFO_L4TAB
	pfinfoLpin   = 0x8 // XEN_DOMCTL_PFINFO_LPINTAB
	pfinfoBroken = 0xd // XEN_DOMCTL_PFINFO_BROKEN
	pfinfoXalloc = 0xe // XEN_DOMCTL_PFINFO_XALLOC
	pfinfoXtab   = 0xf // XEN_DOMCTL_PFINFO_XTAB
)

// knownPageType mirrors is_known_page_type (xg_sr_common.h).
func knownPageType(t uint64) bool {
	return t <= pfinfoL4tab || (t >= pfinfoLpin|pfinfoL1tab && t <= pfinfoLpin|pfinfoL4tab) ||
		t == pfinfoBroken || t == pfinfoXalloc || t == pfinfoXtab
}

// pageTypeHasData mirrors page_type_has_stream_data (xg_sr_common.h): the
// normal and page-table types carry a page of contents in the stream;
// BROKEN, XALLOC and XTAB do not. Precondition: knownPageType(t).
func pageTypeHasData(t uint64) bool {
	return t < pfinfoBroken
}

// GuestType is the domain header's guest type (DHDR_TYPE_*).
type GuestType uint32

// The guest types a libxc stream names (xg_sr_stream_format.h).
const (
	GuestPV  GuestType = 1 // DHDR_TYPE_X86_PV
	GuestHVM GuestType = 2 // DHDR_TYPE_X86_HVM
)

func (g GuestType) String() string {
	switch g {
	case GuestPV:
		return "x86 PV"
	case GuestHVM:
		return "x86 HVM"
	}
	return fmt.Sprintf("guest type %d", uint32(g))
}

// Caps on what Split and Join accept. Each is checked before anything is
// read or allocated by the length it bounds.
const (
	// MaxOptionalData caps the xl header's optional data (the domain's
	// JSON configuration, typically 5-50 KiB).
	MaxOptionalData = 1 << 20
	// MaxRecordLength caps any libxc record, as libxc's REC_LENGTH_MAX does.
	MaxRecordLength = libxcRecLengthMax
	// MaxMetadataRecord caps a record other than PAGE_DATA: it is kept in
	// the descriptor. The largest real ones (X86_PV_P2M_FRAMES, 8 bytes per
	// 2 MiB of guest memory; a QEMU device state) are a few MiB.
	MaxMetadataRecord = 64 << 20
	// MaxPFNsPerRecord caps a PAGE_DATA record's pfn count: libxc writes
	// batches of at most MAX_BATCH_SIZE (1024).
	MaxPFNsPerRecord = 1 << 16
	// MaxPFNs caps pfns (each must be below it): 2^28 pages, 1 TiB of
	// guest-physical space. The zero bitmap is then at most 32 MiB.
	MaxPFNs = 1 << 28
	// MaxDescriptorSize caps a descriptor, compressed and uncompressed.
	MaxDescriptorSize = 256 << 20
)

// Error classes, besides errdefs.ErrInvalidArgument, which every problem
// with the bytes of an image or descriptor wraps.
var (
	// ErrTruncated: the image or descriptor ends early.
	ErrTruncated = errors.New("truncated")
	// ErrUnsupported: a well-formed image this package does not split
	// (checkpointed or live-migration streams, legacy v1 streams,
	// big-endian streams, pages other than 4 KiB, other guest types).
	ErrUnsupported = errors.New("unsupported save image")
	// ErrUnsupportedVersion: a descriptor format version this build cannot
	// read.
	ErrUnsupportedVersion = errors.New("unsupported descriptor format version")
	// ErrMismatch: what Join produced does not match the descriptor's
	// length and checksum of the original image (a wrong or corrupt
	// memory image).
	ErrMismatch = errors.New("joined image does not match the descriptor")
)

// FormatError reports a problem with the bytes of an image or descriptor:
// where it is and what it is. It wraps errdefs.ErrInvalidArgument and, when
// it applies, ErrTruncated, ErrUnsupported, ErrUnsupportedVersion or
// ErrMismatch.
type FormatError struct {
	In     string // "image", "descriptor" (its envelope) or "descriptor body"
	Offset int64  // byte offset of the problem in In (the body uncompressed)
	What   string // the header or record it is in, e.g. "libxc PAGE_DATA record (type 0x1)"
	Msg    string
	class  error
}

func (e *FormatError) Error() string {
	s := fmt.Sprintf("saveimage: %s offset %d: %s: %s", e.In, e.Offset, e.What, e.Msg)
	if e.class != nil {
		s += " (" + e.class.Error() + ")"
	}
	return s
}

// Unwrap returns the error classes e belongs to.
func (e *FormatError) Unwrap() []error {
	if e.class == nil {
		return []error{errdefs.ErrInvalidArgument}
	}
	return []error{errdefs.ErrInvalidArgument, e.class}
}
