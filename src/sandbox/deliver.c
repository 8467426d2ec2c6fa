/* deliver.c: signed webhook deliveries to MailKit on Dodo's retry schedule, from one thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "log.h"
#include "sandbox.h"

#define DELIVER_POLL_MS		200	/* the table is polled this often when nobody wakes us */
#define DELIVER_BATCH		16	/* due deliveries taken per pass */
#define DELIVER_LEASE_MS	60000	/* a claimed delivery is hidden from other processes this long */
#define DELIVER_TIMEOUT_MS	15000	/* Dodo: 15 s for connect and read together */
#define DELIVER_CONNECT_TIMEOUT_MS 5000
#define DELIVER_REPLY_MAX	(64 * 1024)	/* we only look at the status; bodies are capped */
#define DELIVER_ERROR_MAX	256
#define DELIVER_HEADER_MAX	2048	/* one webhook-* header line */
#define DELIVER_USER_AGENT	"mailkit-sandbox/1 (Dodo Payments webhooks emulation)"

/*
 * Dodo's schedule: after a failed attempt, retry immediately, then after
 * 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; after the 8th retry the message
 * is marked failed.  Milliseconds, indexed by the number of failures so far
 * minus one.
 */
static const int64_t deliver_schedule_ms[] = {
	0, 5000, 5 * 60000, 30 * 60000, 2 * 3600000LL, 5 * 3600000LL, 10 * 3600000LL,
	10 * 3600000LL,
};
#define DELIVER_RETRIES	(sizeof(deliver_schedule_ms) / sizeof(deliver_schedule_ms[0]))

static pthread_t	deliver_tid;
static int		deliver_running;
static pthread_mutex_t	deliver_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	deliver_cond = PTHREAD_COND_INITIALIZER;
static int		deliver_pending_wake;
static int		deliver_stopping;

struct deliver_item {
	char	 id[SANDBOX_ID_MAX];
	char	*body;
	int	 attempts;
	int64_t	 next_attempt_at;
	char	 endpoint_id[SANDBOX_ID_MAX];	/* "" for SANDBOX_WEBHOOK_URL */
};

/* SANDBOX_WEBHOOK_URL empty: deliveries are recorded, never sent. */
static int
deliver_record_only(void)
{
	return sandbox.webhook_url == NULL || sandbox.webhook_url[0] == '\0';
}

/* What deliver_enqueue_endpoint() needs: the event, and what it found. */
struct deliver_fanout {
	sqlite3		*db;
	const char	*type, *body;
	int64_t		 now;
	int		 same_url;	/* an endpoint at SANDBOX_WEBHOOK_URL was served */
	int		 failed;
};

/* Insert one delivery row (endpoint_id NULL: to SANDBOX_WEBHOOK_URL).  0 / -1. */
static int
deliver_insert(sqlite3 *db, const char *type, const char *body, const char *status,
    const char *endpoint_id, int64_t now)
{
	sqlite3_stmt	*st;
	char		 id[SANDBOX_ID_MAX];
	int		 rc = -1;

	state_id("msg_", id, sizeof(id));
	st = state_query(db, "INSERT INTO deliveries (id, type, body, status, attempts,"
	    " next_attempt_at, created_at, updated_at, endpoint_id)"
	    " VALUES (?1, ?2, ?3, ?4, 0, ?6, ?6, ?6, ?5)", 5, id, type, body, status, endpoint_id);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 6, now);
	if (sqlite3_step(st) == SQLITE_DONE)
		rc = 0;
	else
		log_error("sandbox webhook enqueue: %s", sqlite3_errmsg(db));
	state_done(st);
	return rc;
}

/* catalog_endpoints() callback: one delivery to a registered endpoint. */
static int
deliver_enqueue_endpoint(const struct catalog_endpoint *e, void *arg)
{
	struct deliver_fanout	*f = arg;

	if (deliver_insert(f->db, f->type, f->body, "pending", e->id, f->now) == -1) {
		f->failed = 1;
		return 1;
	}
	if (!deliver_record_only() && strcmp(e->url, sandbox.webhook_url) == 0)
		f->same_url = 1;
	return 0;
}

int
deliver_enqueue(sqlite3 *db, const char *type, json_object *data)
{
	struct deliver_fanout	 f = { .db = db, .type = type };
	json_object		*env = json_object_new_object();
	char			 t[SANDBOX_TIME_MAX];
	int			 rc = -1;

	f.now = state_now_ms();
	state_iso(f.now, t, sizeof(t));
	json_object_object_add(env, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(env, "type", json_object_new_string(type));
	json_object_object_add(env, "timestamp", json_object_new_string(t));
	json_object_object_add(env, "data", data);
	f.body = json_object_to_json_string_ext(env,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	/* every endpoint made through the API that wants this type, signed with its secret */
	if (catalog_endpoints(db, type, deliver_enqueue_endpoint, &f) == -1 || f.failed)
		goto out;
	/* and SANDBOX_WEBHOOK_URL, unless an endpoint there got it already;
	 * record-only: a status the delivery thread never picks up */
	if (!f.same_url && deliver_insert(db, type, f.body, deliver_record_only() ?
	    "recorded" : "pending", NULL, f.now) == -1)
		goto out;
	rc = 0;
out:
	json_object_put(env);
	return rc;
}

void
deliver_wake(void)
{
	/* even record-only: endpoints made through the API get theirs */
	pthread_mutex_lock(&deliver_lock);
	deliver_pending_wake = 1;
	pthread_cond_signal(&deliver_cond);
	pthread_mutex_unlock(&deliver_lock);
}

/* Discard the reply body, up to a cap. */
static size_t
deliver_sink(char *p, size_t size, size_t n, void *arg)
{
	size_t	*got = arg;

	(void)p;
	*got += size * n;
	return *got > DELIVER_REPLY_MAX ? 0 : size * n;
}

/*
 * One attempt: sign with a fresh timestamp (the id stays the same across
 * retries, as Standard Webhooks asks) and POST.  Returns the HTTP status,
 * or -1 with why filled on transport failure.
 */
static long
deliver_attempt(CURL *curl, sqlite3 *db, const struct deliver_item *it, char *ts, size_t tslen,
    char *sig, size_t siglen, char *why, size_t whylen)
{
	struct curl_slist	*h = NULL;
	char			 line[DELIVER_HEADER_MAX];
	char			 errbuf[CURL_ERROR_SIZE];
	size_t			 got = 0;
	long			 status = -1;
	CURLcode		 cc;

	struct catalog_endpoint	 to;

	why[0] = ts[0] = sig[0] = '\0';
	if (fault_webhook_should_fail(db)) {
		snprintf(why, whylen, "fault injected: answered as a 500 from MailKit");
		return 500;
	}
	if (it->endpoint_id[0] != '\0') {
		if (catalog_endpoint_get(db, it->endpoint_id, &to) == -1) {
			snprintf(why, whylen, "endpoint %s is gone", it->endpoint_id);
			return -1;
		}
	} else if (deliver_record_only()) {	/* queued by a run that had a URL */
		snprintf(why, whylen, "SANDBOX_WEBHOOK_URL is not set");
		return -1;
	} else {
		snprintf(to.url, sizeof(to.url), "%s", sandbox.webhook_url);
		to.key = sandbox.webhook_key;
	}
	snprintf(ts, tslen, "%lld", (long long)(state_now_ms() / 1000));
	if (whsig_sign(&to.key, it->id, ts, it->body, strlen(it->body), sig,
	    siglen) == -1) {
		snprintf(why, whylen, "signing failed");
		return -1;
	}
	h = curl_slist_append(h, "Content-Type: application/json");
	snprintf(line, sizeof(line), "webhook-id: %s", it->id);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "webhook-timestamp: %s", ts);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "webhook-signature: %s", sig);
	h = curl_slist_append(h, line);
	h = curl_slist_append(h, "Expect:");

	curl_easy_reset(curl);
	errbuf[0] = '\0';
	curl_easy_setopt(curl, CURLOPT_URL, to.url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, it->body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(it->body));
	curl_easy_setopt(curl, CURLOPT_USERAGENT, DELIVER_USER_AGENT);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)DELIVER_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)DELIVER_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);	/* 3xx is a failure */
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, deliver_sink);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &got);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500	/* 7.85.0 deprecated the bitmask form */
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	cc = curl_easy_perform(curl);
	if (cc == CURLE_OK || cc == CURLE_WRITE_ERROR)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (status <= 0) {
		status = -1;
		snprintf(why, whylen, "%s", errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc));
	}
	curl_slist_free_all(h);
	return status;
}

/* Record the outcome of an attempt. */
static void
deliver_record(sqlite3 *db, const struct deliver_item *it, long status, const char *ts,
    const char *sig, const char *why)
{
	sqlite3_stmt	*st;
	int64_t		 now = state_now_ms(), next = now;
	int		 attempts = it->attempts + 1;
	const char	*state = "pending";

	if (status >= 200 && status <= 299)
		state = "succeeded";
	else if (attempts > (int)DELIVER_RETRIES)
		state = "failed";
	else
		next = now + deliver_schedule_ms[attempts - 1] /
		    (sandbox.retry_divisor > 0 ? sandbox.retry_divisor : 1);
	st = state_prepare(db, "UPDATE deliveries SET status = ?2, attempts = ?3,"
	    " next_attempt_at = ?4, last_status = ?5, last_error = ?6, updated_at = ?7,"
	    " last_timestamp = ?8, last_signature = ?9 WHERE id = ?1");
	if (st == NULL)
		return;
	sqlite3_bind_text(st, 1, it->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, attempts);
	sqlite3_bind_int64(st, 4, next);
	if (status > 0)
		sqlite3_bind_int64(st, 5, status);
	else
		sqlite3_bind_null(st, 5);
	if (why != NULL && why[0] != '\0')
		sqlite3_bind_text(st, 6, why, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 6);
	sqlite3_bind_int64(st, 7, now);
	if (ts[0] != '\0' && sig[0] != '\0') {
		sqlite3_bind_text(st, 8, ts, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, sig, -1, SQLITE_STATIC);
	}
	if (sqlite3_step(st) != SQLITE_DONE)
		log_error("sandbox webhook record: %s", sqlite3_errmsg(db));
	state_done(st);
	if (strcmp(state, "failed") == 0)
		log_warn("sandbox webhook %s failed after %d attempts", it->id, attempts);
}

/* Take a due delivery for this process: the lease hides it from other
 * processes' delivery threads while the attempt runs.  1 if ours. */
static int
deliver_claim(sqlite3 *db, const struct deliver_item *it)
{
	sqlite3_stmt	*st;
	int		 ok;

	st = state_prepare(db, "UPDATE deliveries SET next_attempt_at = ?3 WHERE id = ?1"
	    " AND status = 'pending' AND next_attempt_at = ?2");
	if (st == NULL)
		return 0;
	sqlite3_bind_text(st, 1, it->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, it->next_attempt_at);
	sqlite3_bind_int64(st, 3, state_now_ms() + DELIVER_LEASE_MS);
	ok = sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(db) == 1;
	state_done(st);
	return ok;
}

/* One pass over the due deliveries.  Returns how many were attempted. */
static int
deliver_pass(CURL *curl, sqlite3 *db)
{
	struct deliver_item	 items[DELIVER_BATCH];
	sqlite3_stmt		*st;
	char			 why[DELIVER_ERROR_MAX], ts[32], sig[WHSIG_SIGNATURE_MAX];
	size_t			 n = 0, i;
	long			 status;

	st = state_prepare(db, "SELECT id, body, attempts, next_attempt_at, endpoint_id"
	    " FROM deliveries"
	    " WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY seq LIMIT ?2");
	if (st == NULL)
		return 0;
	sqlite3_bind_int64(st, 1, state_now_ms());
	sqlite3_bind_int(st, 2, DELIVER_BATCH);
	while (n < DELIVER_BATCH && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(items[n].id, sizeof(items[n].id), "%s", state_text(st, 0));
		if ((items[n].body = strdup(state_text(st, 1))) == NULL)
			break;
		items[n].attempts = sqlite3_column_int(st, 2);
		items[n].next_attempt_at = sqlite3_column_int64(st, 3);
		snprintf(items[n].endpoint_id, sizeof(items[n].endpoint_id), "%s",
		    state_text(st, 4));
		n++;
	}
	state_done(st);
	for (i = 0; i < n; i++) {
		if (deliver_claim(db, &items[i])) {
			status = deliver_attempt(curl, db, &items[i], ts, sizeof(ts), sig,
			    sizeof(sig), why, sizeof(why));
			deliver_record(db, &items[i], status, ts, sig, why);
		}
		free(items[i].body);
	}
	return (int)n;
}

static void *
deliver_main(void *arg)
{
	struct timespec	 until;
	sqlite3		*db;
	CURL		*curl;
	int		 worked = 0;

	(void)arg;
	if ((db = state_db()) == NULL || (curl = curl_easy_init()) == NULL) {
		log_error("sandbox: webhook delivery thread cannot start");
		return NULL;
	}
	for (;;) {
		pthread_mutex_lock(&deliver_lock);
		if (!worked && !deliver_pending_wake && !deliver_stopping) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_nsec += (long)DELIVER_POLL_MS * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec += 1;
				until.tv_nsec -= 1000000000L;
			}
			while (!deliver_pending_wake && !deliver_stopping &&
			    pthread_cond_timedwait(&deliver_cond, &deliver_lock, &until) != ETIMEDOUT)
				;
		}
		deliver_pending_wake = 0;
		if (deliver_stopping) {
			pthread_mutex_unlock(&deliver_lock);
			break;
		}
		pthread_mutex_unlock(&deliver_lock);
		/* A full batch means more may be due: go again without sleeping. */
		worked = deliver_pass(curl, db) == DELIVER_BATCH;
	}
	curl_easy_cleanup(curl);
	state_close();
	return NULL;
}

int
deliver_start(void)
{
	if (pthread_create(&deliver_tid, NULL, deliver_main, NULL) != 0)
		return -1;
	deliver_running = 1;
	return 0;
}

void
deliver_stop(void)
{
	if (!deliver_running)
		return;
	pthread_mutex_lock(&deliver_lock);
	deliver_stopping = 1;
	pthread_cond_signal(&deliver_cond);
	pthread_mutex_unlock(&deliver_lock);
	pthread_join(deliver_tid, NULL);
	deliver_running = 0;
}
