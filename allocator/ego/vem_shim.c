//go:build egocapi

// Shims between vem_unsafe.go and the EGO SDK's libvem. UNVERIFIED against
// a real vem.h (see vem_unsafe.go): this is the one place where the SDK's
// prototypes, message structures and error codes are matched. Each query
// renders its answer as the JSON of allocator/ego/wire so that the Go side
// parses C answers and REST answers with the same checks.

#include <stdio.h>
#include <string.h>
#include <vem.h>

static const char *last_error = "";

void *sf_open(const char *master) { return vem_open((char *)master); }

int sf_logon(void *h, const char *user, const char *password) {
	int rc = vem_logon(h, (char *)user, (char *)password);
	if (rc != 0) last_error = vem_strerror(rc);
	return rc;
}

int sf_logon_token(void *h, const char *token) {
	int rc = vem_logon_credential(h, (char *)token);
	if (rc != 0) last_error = vem_strerror(rc);
	return rc;
}

const char *sf_error(void *h) { (void)h; return last_error; }

#define SF_CALL(expr) do { int rc_ = (expr); if (rc_ != 0) { last_error = vem_strerror(rc_); return rc_ == VEM_ENOENT ? 404 : (rc_ ? rc_ : 1); } } while (0)

int sf_consumer(void *h, const char *path, char *json, int len) { SF_CALL(vem_consumer_json(h, path, json, len)); return 0; }
int sf_resourcegroup(void *h, const char *name, char *json, int len) { SF_CALL(vem_resourcegroup_json(h, name, json, len)); return 0; }
int sf_register(void *h, const char *client, int ttl, char *json, int len) { SF_CALL(vem_register2_json(h, client, ttl, json, len)); return 0; }
int sf_alloc(void *h, const char *consumer, const char *rg, const char *resreq, int minslots, int maxslots, int exclusive, const char *name, char *json, int len) {
	char id[256];
	SF_CALL(vem_alloc(h, consumer, rg, resreq, minslots, maxslots, exclusive ? EGO_ALLOC_EXCLUSIVE : 0, name, id, sizeof id));
	snprintf(json, len, "{\"allocationid\":\"%s\"}", id);
	return 0;
}
int sf_query(void *h, const char *id, char *json, int len) { SF_CALL(vem_allocation_json(h, id, json, len)); return 0; }
int sf_list(void *h, const char *client, char *json, int len) { SF_CALL(vem_allocations_json(h, client, json, len)); return 0; }
int sf_release(void *h, const char *id, const char *host, int slots) { SF_CALL(vem_release(h, id, host, slots, AUTOADJ)); return 0; }
int sf_free(void *h, const char *id) { SF_CALL(vem_release(h, id, NULL, 0, 0)); return 0; }
int sf_message(void *h, int timeout_s, char *json, int len) { SF_CALL(vem_getmessage_json(h, timeout_s, json, len)); return 0; }
