/* null.c: null.fcgi — the benchmark floor: the library's request loop answering {"ok":true} to anything. */
#include "mailkit.h"

static struct settings settings;

/* Any method, any path: the same reply, so only the loop and the web server cost. */
static void
null_ok(const struct request *req, struct response *resp)
{
	static const char ok[] = "{\"ok\":true}";

	(void)req;
	response_body(resp, 200, "application/json", ok, sizeof ok - 1);
}

/* GET and POST on every path (POST bodies are read, as the real programs read them). */
static const struct route routes[] = {
	{ "GET", "/*", null_ok },
	{ "POST", "/*", null_ok },
};

int
main(void)
{
	struct app app = {
		.name = "null.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
	};

	return server_main(&app, &settings, 0);
}
