/*
 * guest.c — the SnowFlock guest API from C: fork this VM into up to 4 VMs,
 * let each clone compute a part, and collect their results. Inside a
 * SnowFlock guest it clones; anywhere else it prints why it cannot.
 *
 *   cc -o guest guest.c $(pkg-config --cflags --libs libegosf)
 */
#include <egosf.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, int rc)
{
	fprintf(stderr, "guest: %s: %s (%s)\n", what, egosf_strerror(rc), egosf_last_error());
	return rc == EGOSF_ENOT_IN_GUEST ? 2 : 1;
}

int main(void)
{
	char *ticket;
	int granted, id;
	int rc = sf_request_ticket(4, &ticket, &granted);
	if (rc != EGOSF_OK)
		return fail("sf_request_ticket", rc);
	rc = sf_clone(ticket, &id);
	if (rc != EGOSF_OK) {
		egosf_string_free(ticket);
		return fail("sf_clone", rc);
	}
	if (id > 0) { /* a clone: do its share, hand back a result, end */
		char result[64];
		snprintf(result, sizeof result, "clone %d of %d done", id, granted);
		rc = sf_exit(result, strlen(result));
		return fail("sf_exit", rc); /* sf_exit returns only on failure */
	}
	egosf_exits *exits;
	rc = sf_join(ticket, &exits);
	egosf_string_free(ticket);
	if (rc != EGOSF_OK)
		return fail("sf_join", rc);
	for (int i = 0; i < egosf_exits_count(exits); i++) {
		size_t len;
		const char *res = egosf_exit_result(exits, i, &len);
		if (egosf_exit_killed(exits, i))
			printf("clone %d killed: %s\n", egosf_exit_clone_id(exits, i), egosf_exit_reason(exits, i));
		else
			printf("clone %d: %.*s\n", egosf_exit_clone_id(exits, i), (int)len, res);
	}
	egosf_exits_free(exits);
	return 0;
}
