#!/usr/bin/python3
# smtp-server.py: a real SMTP relay on loopback for the tests (Debian's python3-aiosmtpd).
#
#   smtp-server.py PORT OUTDIR [--tls CERT KEY] [--auth USER PASSWORD]
#
# With --tls it offers STARTTLS and requires it before anything else; with
# --auth it requires AUTH (only over TLS when --tls is given).  Every message
# it takes is written to OUTDIR/NNNN.json: {mail_from, rcpt_tos, data (the
# bytes received after un-dot-stuffing, base64), tls, login}.  It prints
# "ready" once listening and runs until SIGTERM.
import base64
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def main():
	args = sys.argv[1:]
	port, outdir = int(args[0]), args[1]
	tls = auth = None
	rest = args[2:]
	while rest:
		if rest[0] == '--tls':
			tls, rest = (rest[1], rest[2]), rest[3:]
		elif rest[0] == '--auth':
			auth, rest = (rest[1].encode(), rest[2].encode()), rest[3:]
		else:
			sys.exit(f'unknown argument {rest[0]}')
	count = [0]
	lock = threading.Lock()

	class Handler:
		async def handle_DATA(self, server, session, envelope):
			with lock:
				count[0] += 1
				n = count[0]
			record = {
				'mail_from': envelope.mail_from,
				'rcpt_tos': envelope.rcpt_tos,
				'data': base64.b64encode(envelope.original_content).decode(),
				'tls': session.ssl is not None,
				'login': session.auth_data.decode() if session.authenticated else None,
			}
			tmp = os.path.join(outdir, f'{n:04d}.tmp')
			with open(tmp, 'w') as f:
				json.dump(record, f)
			os.rename(tmp, os.path.join(outdir, f'{n:04d}.json'))
			return '250 2.0.0 Ok: queued as test%04d' % n

	def authenticator(server, session, envelope, mechanism, data):
		ok = auth is not None and data.login == auth[0] and data.password == auth[1]
		return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

	params = {}
	if tls is not None:
		ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
		ctx.load_cert_chain(tls[0], tls[1])
		params.update(tls_context=ctx, require_starttls=True)
	if auth is not None:
		params.update(authenticator=authenticator, auth_required=True,
		    auth_require_tls=tls is not None)
	controller = Controller(Handler(), hostname='127.0.0.1', port=port, server_hostname='relay.test',
	    ready_timeout=10, **params)
	controller.start()
	stop = threading.Event()
	signal.signal(signal.SIGTERM, lambda *a: stop.set())
	signal.signal(signal.SIGINT, lambda *a: stop.set())
	print('ready', flush=True)
	stop.wait()
	controller.stop()


main()
