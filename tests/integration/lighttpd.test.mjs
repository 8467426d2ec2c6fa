// lighttpd.test.mjs: every route through lighttpd + spawn-fcgi, against the sandbox.
import { defineRouteTests } from './routes.mjs';

defineRouteTests('lighttpd');
