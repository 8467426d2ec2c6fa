/*
 * mailkit.h: the support library behind every MailKit program, in one include.
 *
 * A request flows: server (FastCGI loop, owned request copy, routing, one
 * response writer) -> the program's handler -> fields/valid (allowlisted
 * input) -> dodo (payments and the credit ledger) and mail (the provider
 * interface; mail_resend over upstream, the one outbound HTTP client:
 * timeouts, retries, keep-alive, capped replies; mail_smtp to a relay,
 * the message built by mime) ->
 * response_json/response_fail.  auth decides which customer a request acts
 * for (apikey: Bearer keys, stored hashed) and issues keys; whsig verifies
 * and signs webhooks; store keeps MailKit's durable state in SQLite (db),
 * one module per concern (store_webhook, store_lowbal, store_send: the send
 * journal, store_keys); billing drives a send through that journal (debit,
 * send, refund, fence), answers it truly (200, 202 queued, 4xx, 5xx) and
 * delivers queued sends in the background (workers: the few threads of a
 * process that run such passes); usage (NeuralAPI) drives an AI request
 * through holds (store_usage), the model (openai) and a usage outbox to
 * Dodo's meter; settings and log are read and opened once per process.
 */
#ifndef MAILKIT_H
#define MAILKIT_H

#include "err.h"
#include "log.h"
#include "buf.h"
#include "valid.h"
#include "url.h"
#include "settings.h"
#include "server.h"
#include "fields.h"
#include "upstream.h"
#include "dodo.h"
#include "customer_plan.h"
#include "mail.h"
#include "whsig.h"
#include "apikey.h"
#include "auth.h"
#include "sendreq.h"

#endif
