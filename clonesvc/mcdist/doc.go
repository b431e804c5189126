// Package mcdist distributes a clone family's memory pages: clone hosts
// ask the memory server for pages on demand, and the server multicasts
// each page to the family's group so every host keeps every page it hears.
//
// # Roles
//
// The Server runs on the parent's host over the family's frozen image. It
// answers a request by multicasting the page to the group; a page already
// queued, or sent within DupWindow, is not sent again for a request it
// already answers (duplicate suppression). It paces its sends with a token
// bucket held down to a little above the receive rate of the slowest
// receiver that reports loss. In the end game it answers by unicast: for a
// page already multicast UnicastAfter times, and once EndGameFraction of
// the non-zero pages went out and most requests are retries. Pages marked
// zero are answered with a small zero message instead of their bytes.
//
// A Client runs on each clone host. Run joins the group and stores every
// valid page it hears in a Store, asked for or not. Fetch asks for a page
// and returns once it is stored; concurrent Fetches of one page share a
// request, timed-out requests are retried with exponential backoff, and
// after FetchBound a Fetch fails with an error wrapping
// errdefs.ErrUnavailable (clonesvc.ErrUnavailable). Clients report their
// receive rate and loss every ReportInterval.
//
// # Wire format, version 1
//
// Every packet is one UDP datagram: a 40-byte header, an encrypted
// payload, and a 16-byte AEAD tag. Integers are big-endian.
//
//	off len field
//	  0   4 magic "SFMD"
//	  4   1 version (1; any other version is dropped)
//	  5   1 type: 1 request, 2 fragment, 3 zero, 4 report, 5 nack
//	  6   2 length of the whole packet (must equal the datagram's)
//	  8   8 family tag: SHA-256("snowflock mcdist family\x00" || family ID)[:8]
//	 16   8 sender ID: random, non-zero, new each time an endpoint starts
//	 24   8 sequence: the sender's packet number, from 1
//	 32   8 time: the sender's clock, Unix milliseconds
//	 40   n payload, AES-256-GCM ciphertext
//	40+n 16 GCM tag over the header (additional data) and the payload
//
// Keys: PRK = HKDF-Extract(SHA-256, salt "snowflock mcdist v1", the
// family's 32-byte descriptor.Key); each sender's key =
// HKDF-Expand(PRK, "packet key\x00" || sender ID || family ID, 32). The
// nonce is 4 zero bytes then the sequence, so a (key, nonce) pair never
// repeats. Requests and reports are sealed too: only family members may
// ask for pages or pace the server.
//
// Payloads (after decryption):
//
//	request  flags(1: bit 0 retry) count(2) page(8)×count; 1 ≤ count ≤ 128
//	fragment page(8) stream(4) index(1) count(1) data; count ≤ 64, fragments
//	         but the last carry ceil(4096/count) bytes, the last the rest
//	zero     stream(4) count(2) page(8)×count: these pages are all zeros
//	nack     stream(4)=0 count(2) page(8)×count: pages past the image's end
//	report   interval ms(4) data bytes(8) multicast packets received(4)
//	         multicast packets expected(4) over the interval
//
// A page travels in as many equal fragments as keep each datagram within
// the server's MaxDatagram (default 1400 bytes of UDP payload: 4 fragments
// of 1024 bytes). Stream numbers the server's multicast packets (0 on
// unicast) so receivers can measure loss. Receivers reassemble, and
// deliver a page only when every fragment arrived and verified.
//
// Receivers drop, and count by reason: malformed packets (bad magic,
// version, type, length or payload), other families' packets (family tag),
// forged ones (the tag does not verify: wrong key, changed bytes), and
// stale ones (a sequence already seen or older than the 1024-packet
// window, or a time more than MaxSkew from the receiver's clock, which
// bounds replays of a forgotten sender's packets).
package mcdist
