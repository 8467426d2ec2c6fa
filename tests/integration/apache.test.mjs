// apache.test.mjs: every route through Apache mod_proxy_fcgi + spawn-fcgi, against the sandbox.
import { defineRouteTests } from './routes.mjs';

defineRouteTests('apache');
