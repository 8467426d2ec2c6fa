/* usage.c: Dodo's usage events (under /sandbox/dodo): ingestion with Dodo's limits, the list and the lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "sandbox.h"
#include "url.h"

#define USAGE_EVENTS_MAX	1000		/* Dodo: events per ingest request */
#define USAGE_PAST_MS		(3600LL * 1000)	/* timestamps at most 1 h old ... */
#define USAGE_AHEAD_MS		(300LL * 1000)	/* ... and at most 5 min ahead */
#define USAGE_ID_MAX		256		/* event_id, customer_id, event_name */
#define USAGE_METADATA_KEY_MAX	100		/* Dodo: event metadata keys */
#define USAGE_QUERY_MAX		320		/* one decoded query value */

/* One event of a request, checked. */
struct usage_event {
	const char	*event_id;
	const char	*customer_id;
	const char	*event_name;
	const char	*metadata;	/* JSON text (owned by the request's JSON), or NULL */
	int64_t		 timestamp;	/* ms */
};

static int
usage_id_cmp(const void *a, const void *b)
{
	return strcmp(((const struct usage_event *)a)->event_id,
	    ((const struct usage_event *)b)->event_id);
}

/* A required string member of 1..USAGE_ID_MAX bytes, or NULL. */
static const char *
usage_string(json_object *o, const char *name)
{
	const char	*v;

	if (dodo_api_opt_string(o, name, USAGE_ID_MAX, &v) == -1 || v == NULL || v[0] == '\0')
		return NULL;
	return v;
}

/*
 * Check event i of the request (object o) into e as Dodo does: 422 for the
 * schema (a missing or mistyped member), 400 for the limits (timestamp
 * window, metadata).  0, or -1 with resp filled.
 */
static int
usage_event_check(json_object *o, size_t i, int64_t now, struct usage_event *e,
    struct response *resp)
{
	const char	*ts;
	char		 why[128];

	if (!json_object_is_type(o, json_type_object) ||
	    (e->event_id = usage_string(o, "event_id")) == NULL ||
	    (e->customer_id = usage_string(o, "customer_id")) == NULL ||
	    (e->event_name = usage_string(o, "event_name")) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "events[%zu] needs event_id,"
		    " customer_id and event_name: strings of 1-%d characters", i, USAGE_ID_MAX);
		return -1;
	}
	e->timestamp = now;
	if (dodo_api_opt_string(o, "timestamp", SANDBOX_TIME_MAX, &ts) == -1 ||
	    (ts != NULL && dodo_api_parse_time(ts, &e->timestamp) == -1)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "events[%zu].timestamp must be"
		    " an ISO 8601 UTC time", i);
		return -1;
	}
	if (e->timestamp < now - USAGE_PAST_MS || e->timestamp > now + USAGE_AHEAD_MS) {
		dodo_api_error(resp, 400, "INVALID_REQUEST_BODY", "events[%zu].timestamp is more"
		    " than 1 hour in the past or more than 5 minutes in the future", i);
		return -1;
	}
	if (dodo_api_metadata_keys(o, USAGE_METADATA_KEY_MAX, &e->metadata, why,
	    sizeof(why)) == -1) {
		dodo_api_error(resp, 400, "INVALID_REQUEST_BODY", "events[%zu]: %s", i, why);
		return -1;
	}
	return 0;
}

/* Store the n checked events, those seen before ignored, in one write
 * transaction: how many were new, or -1. */
static int64_t
usage_store(sqlite3 *db, const struct usage_event *ev, size_t n, int64_t now)
{
	sqlite3_stmt	*st;
	int64_t		 added = 0;
	size_t		 i;
	int		 rc = SQLITE_DONE;

	if (db_begin(db) == -1)
		return -1;
	for (i = 0; i < n && rc == SQLITE_DONE; i++) {
		st = state_query(db, "INSERT INTO events (event_id, customer_id, event_name,"
		    " timestamp, metadata, created_at) VALUES (?1, ?2, ?3, ?5, ?4, ?6)"
		    " ON CONFLICT (event_id) DO NOTHING", 4, ev[i].event_id, ev[i].customer_id,
		    ev[i].event_name, ev[i].metadata);
		if (st == NULL) {
			rc = SQLITE_ERROR;
			break;
		}
		sqlite3_bind_int64(st, 5, ev[i].timestamp);
		sqlite3_bind_int64(st, 6, now);
		if ((rc = sqlite3_step(st)) == SQLITE_DONE)
			added += sqlite3_changes(db);
		else
			log_error("sandbox events insert: %s", sqlite3_errmsg(db));
		state_done(st);
	}
	if (rc != SQLITE_DONE) {
		db_rollback(db);
		return -1;
	}
	if (db_commit(db) == -1)
		return -1;
	return added;
}

/*
 * The work of POST /events/ingest once its fault is taken: check the whole
 * request, then store the new events.  1 when events were stored.
 */
static int
usage_ingest_apply(const struct request *req, struct response *resp)
{
	struct mk_err		 err;
	struct usage_event	*ev = NULL;
	json_object		*root, *events;
	sqlite3			*db;
	int64_t			 now = state_now_ms(), added;
	size_t			 n, i;

	if ((db = dodo_api_db(resp)) == NULL)
		return 0;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return 0;
	}
	if (!json_object_object_get_ex(root, "events", &events) ||
	    !json_object_is_type(events, json_type_array)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "events is required: an array");
		goto fail;
	}
	if ((n = json_object_array_length(events)) > USAGE_EVENTS_MAX) {
		dodo_api_error(resp, 400, "INVALID_REQUEST_BODY",
		    "at most %d events per request (%zu sent)", USAGE_EVENTS_MAX, n);
		goto fail;
	}
	if (n > 0 && (ev = calloc(n, sizeof(*ev))) == NULL) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++)
		if (usage_event_check(json_object_array_get_idx(events, i), i, now, &ev[i],
		    resp) == -1)
			goto fail;
	/* a repeated id inside one request refuses the whole request */
	if (n > 1)
		qsort(ev, n, sizeof(*ev), usage_id_cmp);
	for (i = 1; i < n; i++) {
		if (strcmp(ev[i - 1].event_id, ev[i].event_id) == 0) {
			dodo_api_error(resp, 400, "INVALID_REQUEST_BODY",
			    "duplicate event_id %.*s in the request", 80, ev[i].event_id);
			goto fail;
		}
	}
	if ((added = usage_store(db, ev, n, now)) == -1) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		goto fail;
	}
	if (added > 0)
		log_info("sandbox: %lld of %zu events ingested", (long long)added, n);
	state_reply_member(resp, "ingested_count", json_object_new_int64(added));
	free(ev);
	json_object_put(root);
	return added > 0;
fail:
	free(ev);
	json_object_put(root);
	return 0;
}

/* POST /dodo/events/ingest {events: [{event_id, customer_id, event_name,
 * timestamp?, metadata?}]} -> {ingested_count}; fault target events_ingest. */
void
usage_ingest(const struct request *req, struct response *resp)
{
	struct fault_plan	plan = { .kind = FAULT_NONE };

	if (!dodo_api_authorized(req, resp) ||
	    fault_check("events_ingest", SANDBOX_API_DODO, resp, &plan) != 0)
		return;
	if (plan.kind == FAULT_LATE) {
		fault_late(req, resp, &plan, "events_ingest", usage_ingest_apply);
		return;
	}
	if (plan.kind == FAULT_STALL)
		fault_sleep_ms(plan.stall_ms);
	usage_ingest_apply(req, resp);
	fault_after(&plan, SANDBOX_API_DODO, resp);
}

/* The Event of "SELECT event_id, customer_id, event_name, timestamp, metadata". */
static json_object *
usage_event_row(sqlite3 *db, sqlite3_stmt *st)
{
	json_object	*o = json_object_new_object();

	(void)db;
	json_object_object_add(o, "event_id", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "customer_id", json_object_new_string(state_text(st, 1)));
	json_object_object_add(o, "event_name", json_object_new_string(state_text(st, 2)));
	dodo_api_time(o, "timestamp", st, 3);
	json_object_object_add(o, "metadata", sqlite3_column_type(st, 4) == SQLITE_NULL ? NULL :
	    state_json_object(st, 4));
	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	return o;
}

/* GET /dodo/events/{event_id}: the Event, or 404 for an id never ingested. */
void
usage_event_get(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;

	if (!dodo_api_enter(req, resp, "events_read") || (db = dodo_api_db(resp)) == NULL)
		return;
	st = state_query(db, "SELECT event_id, customer_id, event_name, timestamp, metadata"
	    " FROM events WHERE event_id = ?1", 1, req->params[0]);
	if (st == NULL) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		return;
	}
	if (sqlite3_step(st) == SQLITE_ROW)
		response_json(resp, 200, usage_event_row(db, st));
	else
		dodo_api_error(resp, 404, "NOT_FOUND", "Event %.*s not found", 80, req->params[0]);
	state_done(st);
}

/* A time filter of the list: 0 (absent: *ms untouched), 1 set, -1 malformed. */
static int
usage_query_time(const char *query, const char *name, int64_t *ms)
{
	char	v[SANDBOX_TIME_MAX];

	if (url_query_get(query, name, v, sizeof(v)) != 0)
		return 0;
	return dodo_api_parse_time(v, ms) == 0 ? 1 : -1;
}

/* GET /dodo/events[?customer_id=&event_name=&meter_id=&start=&end=&page_size=&page_number=]:
 * newest first. */
void
usage_event_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	json_object	*meter = NULL, *v;
	char		 cus[USAGE_QUERY_MAX], name[USAGE_QUERY_MAX], mtr[USAGE_QUERY_MAX];
	int64_t		 start = 0, end = INT64_MAX;
	int		 has_cus, has_name;

	if (!dodo_api_enter(req, resp, "events_read") || (db = dodo_api_db(resp)) == NULL)
		return;
	has_cus = url_query_get(req->query, "customer_id", cus, sizeof(cus)) == 0;
	has_name = url_query_get(req->query, "event_name", name, sizeof(name)) == 0;
	if (usage_query_time(req->query, "start", &start) == -1 ||
	    usage_query_time(req->query, "end", &end) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "start and end must be ISO 8601 UTC times");
		return;
	}
	if (url_query_get(req->query, "meter_id", mtr, sizeof(mtr)) == 0) {
		/* the meter's event name; an event_name given too must match it */
		if ((meter = catalog_meter(db, mtr)) == NULL) {
			dodo_api_error(resp, 404, "NOT_FOUND", "Meter %.*s not found", 80, mtr);
			return;
		}
		json_object_object_get_ex(meter, "event_name", &v);
		if (has_name && strcmp(name, json_object_get_string(v)) != 0) {
			json_object_put(meter);
			dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
			    "event_name does not match the meter's event_name");
			return;
		}
		snprintf(name, sizeof(name), "%s", json_object_get_string(v));
		has_name = 1;
		json_object_put(meter);
	}
	st = state_query(db, "SELECT event_id, customer_id, event_name, timestamp, metadata"
	    " FROM events WHERE (?1 IS NULL OR customer_id = ?1) AND (?2 IS NULL OR"
	    " event_name = ?2) AND timestamp >= ?3 AND timestamp <= ?4"
	    " ORDER BY timestamp DESC, seq DESC LIMIT ?5 OFFSET ?6", 2,
	    has_cus ? cus : NULL, has_name ? name : NULL);
	if (st != NULL) {
		sqlite3_bind_int64(st, 3, start);
		sqlite3_bind_int64(st, 4, end);
	}
	dodo_api_list(db, req, resp, st, 5, usage_event_row);
}
