// Package saveimage splits an `xl save` image of a Xen domain into a small
// descriptor and a pfn-addressed memory image, and joins them back into the
// byte-identical stream that `xl restore` reads.
//
// # The input: an xl save image (Xen 4.17)
//
// `xl save -c DOM FILE` writes, in order (all integers little-endian unless
// marked big-endian):
//
//  1. The xl save-file header, 48 bytes (tools/xl/xl.h, struct
//     save_file_header; written by save_domain_core_writeconfig in
//     tools/xl/xl_saverestore.c, read back by create_domain in
//     tools/xl/xl_vmcontrol.c): magic "Xen saved domain, xl format\n \0 \r"
//     (32 bytes), byteorder 0x01020304 in the host's order, mandatory_flags
//     (XL_MANDATORY_FLAG_JSON 1<<0, XL_MANDATORY_FLAG_STREAMv2 1<<1; xl
//     refuses any other), optional_flags, optional_data_len; then
//     optional_data_len bytes of optional data: a u32 config length and the
//     domain configuration (libxl JSON, NUL-terminated when the JSON flag is
//     set).
//  2. The libxl stream (docs/specs/libxl-migration-stream.pandoc,
//     tools/libs/light/libxl_sr_stream_format.h, libxl_stream_write.c,
//     libxl_stream_read.c): a 16-byte big-endian header (ident "LibxlFmt",
//     version 2, options: bit 0 big-endian, bit 1 legacy), then records of
//     {u32 type, u32 length, body, zero padding to 8 bytes}. A plain save
//     writes LIBXC_CONTEXT (1, empty), then the libxc stream inline, then
//     (HVM only) EMULATOR_XENSTORE_DATA (2) and EMULATOR_CONTEXT (3), then
//     END (0).
//  3. Inside it, the libxc stream (docs/specs/libxc-migration-stream.pandoc,
//     tools/libs/guest/xg_sr_stream_format.h, xg_sr_common.h, xg_sr_common.c,
//     xg_sr_save.c, xg_sr_save_x86_pv.c, xg_sr_common_x86.c, xg_sr_restore.c,
//     xg_sr_restore_x86_pv.c, xg_save_restore.h): a 24-byte image header
//     (big-endian: marker ~0, id "XENF", version 3 — restore accepts 2 and
//     3 — options bit 0 big-endian), a 16-byte domain header (type 1 x86 PV
//     or 2 x86 HVM, page_shift 12, xen_major, xen_minor), then records with
//     the same {type, length, body, padding} framing, length at most
//     REC_LENGTH_MAX (128 MiB), ending with END (0). For a PV guest a plain
//     save writes X86_PV_INFO, X86_CPUID_POLICY, X86_MSR_POLICY,
//     STATIC_DATA_END, X86_PV_P2M_FRAMES, PAGE_DATA records (one per batch
//     of at most MAX_BATCH_SIZE = 1024 pfns, every pfn from 0 to max_pfn
//     exactly once, in order), X86_TSC_INFO, SHARED_INFO, the
//     X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS} records of each online vcpu,
//     and END. `xl save -c` is a plain, non-live save (libxl_domain_suspend
//     with no flags, then libxl_domain_resume): no CHECKPOINT, VERIFY or
//     CHECKPOINT_DIRTY_PFN_LIST record, no libxl CHECKPOINT_END — those
//     belong to Remus, COLO and debug live migration, which Split refuses.
//
// A PAGE_DATA body is {u32 count, u32 reserved, u64 pfn[count], page data}:
// each pfn entry holds the pfn in bits 0-51, reserved bits 52-59 and the
// XEN_DOMCTL_PFINFO type in bits 60-63 (NOTAB 0, L1TAB-L4TAB 1-4, their
// pinned forms 9-12, BROKEN 13, XALLOC 14, XTAB 15; 5-8 are unknown and
// refused). Every type but BROKEN, XALLOC and XTAB is followed, in entry
// order, by 4096 bytes of page contents (page_type_has_stream_data in
// xg_sr_common.h); the record's length is exactly 8 + 8*count + 4096*pages.
//
// # The split
//
// Split copies every byte except page contents into the descriptor, and
// writes each page's contents into the memory image at pfn*4096, skipping
// all-zero pages so that they stay holes. Join replays the descriptor,
// reading pages from the memory image (and writing zeros for zero pages),
// and so rebuilds the original stream byte for byte. The same pfn twice is
// refused: a plain save sends each pfn once (send_all_pages), and a second
// copy (live migration, VERIFY) would need the first kept somewhere other
// than the memory image, whose one copy of a page is the point.
//
// # The descriptor
//
// The envelope, after clonesvc/descriptor's (integers little-endian):
//
//	8 bytes  DescriptorMagic "\x89SFXSAV\n"
//	u16      major format version (FormatMajor), u16 minor (FormatMinor)
//	u64      body length (uncompressed)
//	u32      payload length (the body as raw DEFLATE, RFC 1951)
//	payload
//	u64      CRC-64 (ECMA-182 polynomial, hash/crc64) of all bytes before it
//
// A reader refuses another major version and a newer minor. The body:
//
//	summary  uvarints guest type, xen major, xen minor, libxc version,
//	         image bytes; u32 CRC-32C of the image; uvarints pfn entries,
//	         data pages, zero pages, PAGE_DATA records, memory pfns
//	         (max pfn + 1, or 0); then the zero bitmap, (memory pfns+7)/8
//	         bytes (bit i%8 of byte i/8: pfn i was all zeros or had no data)
//	ops      until opEnd (0):
//	         opLiteral (1): uvarint n, then n bytes copied verbatim
//	         opPages (2): one PAGE_DATA record: uvarints reserved, count,
//	         then runs covering count entries; a run is uvarint
//	         (length-1)<<1|newHigh, [uvarint high 12 bits of the entries
//	         (type and reserved bits) if newHigh], varint (first pfn - pfn
//	         after the previous run); entries within a run are consecutive.
//
// A plain save's pfn list is one run per record, so a record costs about
// eight bytes. Join recomputes each PAGE_DATA header from its op.
//
// # Limits
//
// Split and Join check every length against a cap before reading or
// allocating by it: MaxOptionalData, MaxRecordLength (libxc's own
// REC_LENGTH_MAX), MaxMetadataRecord, MaxPFNsPerRecord, MaxPFNs and
// MaxDescriptorSize.
//
// # Checking a real image
//
// Verify(ctx, f) splits an image into a temporary directory ($TMPDIR),
// joins it back and compares SHA-256 digests; it needs free space for the
// non-zero pages. From a shell on a test host:
//
//	xl save -c DOM /tmp/dom.save
//	go test ./xenbackend/saveimage -run TestVerifyImage -image /tmp/dom.save -v
package saveimage
