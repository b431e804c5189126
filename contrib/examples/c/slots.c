/*
 * slots.c — request clone slots from SnowFlock's allocator, print them,
 * give them back. Build and run:
 *
 *   cc -o slots slots.c $(pkg-config --cflags --libs libegosf)
 *   ./slots [CONFIG]        # CONFIG: a snowflock.yaml; default search if absent
 */
#include <egosf.h>

#include <stdio.h>

static int fail(const char *what, int rc)
{
	fprintf(stderr, "slots: %s: %s: %s\n", what, egosf_strerror(rc), egosf_last_error());
	return 1;
}

int main(int argc, char **argv)
{
	egosf_handle *h;
	int rc = egosf_open(argc > 1 ? argv[1] : NULL, &h);
	if (rc != EGOSF_OK)
		return fail("open", rc);

	/* 1 to 2 slots, waiting at most 30 s; the lease ends in 10 minutes
	 * unless renewed (a crashed program cannot keep the slots). */
	egosf_request_options opts = {.name = "slots-example", .timeout_ms = 30000, .lease_ms = 600000};
	egosf_ticket *t;
	rc = egosf_request(h, 1, 2, &opts, &t);
	if (rc != EGOSF_OK) {
		egosf_close(h);
		return fail("request", rc);
	}
	printf("ticket %s: %d slot(s)\n", egosf_ticket_id(t), egosf_ticket_granted(t));
	for (int i = 0; i < egosf_ticket_nhosts(t); i++)
		printf("  %s (%s): %d\n", egosf_ticket_host_name(t, i),
		       egosf_ticket_host_address(t, i), egosf_ticket_host_count(t, i));

	/* ... start work on those hosts ... */

	rc = egosf_release(h, egosf_ticket_id(t), NULL, 0, NULL);
	if (rc == EGOSF_OK)
		printf("released %s\n", egosf_ticket_id(t));
	egosf_ticket_free(t);
	egosf_close(h);
	return rc == EGOSF_OK ? 0 : fail("release", rc);
}
