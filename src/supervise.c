/* supervise.c: mailkit-supervise — keeps one FastCGI program running on the listening socket it holds. */
#define _GNU_SOURCE	/* sigabbrev_np */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/*
 * Started by spawn-fcgi in place of the program (mailkit-stack does this),
 * so fd 0 is the listening unix socket.  The supervisor keeps that socket
 * open for its whole life and runs the program as its child on it: when the
 * program dies, the socket stays bound and listening, connections the web
 * server makes meanwhile wait in its backlog, and the next program accepts
 * them.  Re-binding the path instead (a new spawn-fcgi) would refuse
 * connections until then and reset every one already queued; lighttpd and
 * Apache also mark a backend that refused a connection as down for a while.
 */

#define SUPERVISE_WORKERS_MAX	64	/* as mailkit-stack --workers */
#define SUPERVISE_CRASH_LIMIT	5	/* deaths within the window that start the backoff */
#define SUPERVISE_CRASH_WINDOW_MS	30000	/* 30 s */
#define SUPERVISE_BACKOFF_FIRST_MS	1000	/* first delay of a crash loop, then doubled */
#define SUPERVISE_BACKOFF_MAX_MS	30000	/* 30 s cap */

struct slot {
	pid_t		pid;		/* 0: not running */
	long long	start_at_ms;	/* when to start it again (monotonic), if not running */
};

static const char	*prog_name;		/* "send.fcgi", for the log */
static const char	*pid_file;
static char	       **prog_argv;
static struct slot	 slots[SUPERVISE_WORKERS_MAX];
static int		 nslots = 1;
static long long	 deaths_ms[SUPERVISE_CRASH_LIMIT];	/* ring of the last deaths */
static int		 ndeaths;
static long long	 backoff_ms;		/* 0: not backing off */

/* Rewrite the pid file with the running children, one per line (rename: never half-written). */
static void
supervise_write_pids(void)
{
	char	 tmp[4096];
	FILE	*f;

	if (pid_file == NULL)
		return;
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", pid_file) >= sizeof tmp ||
	    (f = fopen(tmp, "w")) == NULL) {
		log_error("cannot write %s: %s", pid_file, strerror(errno));
		return;
	}
	for (int i = 0; i < nslots; i++)
		if (slots[i].pid > 0)
			fprintf(f, "%ld\n", (long)slots[i].pid);
	if (fclose(f) != 0 || rename(tmp, pid_file) != 0)
		log_error("cannot write %s: %s", pid_file, strerror(errno));
}

/* Fork and exec the program on fd 0; 0 / -1 (the slot is retried later). */
static int
supervise_start(struct slot *s)
{
	sigset_t	none;
	pid_t		pid;

	if ((pid = fork()) == -1) {
		log_error("cannot fork for %s: %s", prog_name, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		signal(SIGCHLD, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(prog_argv[0], prog_argv);
		log_error("cannot run %s: %s", prog_argv[0], strerror(errno));
		_exit(127);
	}
	s->pid = pid;
	return 0;
}

/* Words for a wait status: "exited with status 1", "killed by signal 9 (KILL)". */
static void
supervise_describe(int status, char *out, size_t outlen)
{
	if (WIFEXITED(status))
		snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status)) {
		const char *abbrev = sigabbrev_np(WTERMSIG(status));

		snprintf(out, outlen, "killed by signal %d (SIG%s)%s", WTERMSIG(status),
		    abbrev ? abbrev : "?", WCOREDUMP(status) ? ", core dumped" : "");
	} else
		snprintf(out, outlen, "ended with wait status %d", status);
}

/*
 * A child died while we are not stopping: schedule its restart, at once
 * unless it is the SUPERVISE_CRASH_LIMIT-th death within the window, in
 * which case each further death doubles the delay up to the cap.
 */
static void
supervise_died(struct slot *s, pid_t pid, int status)
{
	long long	now = clock_ms(), oldest;
	char		how[96];

	supervise_describe(status, how, sizeof how);
	deaths_ms[ndeaths++ % SUPERVISE_CRASH_LIMIT] = now;
	oldest = deaths_ms[ndeaths % SUPERVISE_CRASH_LIMIT];
	s->pid = 0;
	if (ndeaths >= SUPERVISE_CRASH_LIMIT && now - oldest <= SUPERVISE_CRASH_WINDOW_MS) {
		backoff_ms = backoff_ms == 0 ? SUPERVISE_BACKOFF_FIRST_MS :
		    backoff_ms * 2 > SUPERVISE_BACKOFF_MAX_MS ? SUPERVISE_BACKOFF_MAX_MS :
		    backoff_ms * 2;
		s->start_at_ms = now + backoff_ms;
		log_warn("%s pid %ld %s; it died %d times within %d s: backing off, "
		    "restarting in %lld ms", prog_name, (long)pid, how, SUPERVISE_CRASH_LIMIT,
		    SUPERVISE_CRASH_WINDOW_MS / 1000, backoff_ms);
	} else {
		backoff_ms = 0;
		s->start_at_ms = now;
		log_warn("%s pid %ld %s; restarting it", prog_name, (long)pid, how);
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: mailkit-supervise [-w workers] [-p pidfile] [-l logfile] "
	    "-- program [args...]\n"
	    "fd 0 must be the program's listening socket (spawn-fcgi passes it)\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	sigset_t	 sigs;
	const char	*log_file = NULL, *slash;
	int		 ch, stopping = 0, running;

	while ((ch = getopt(argc, argv, "w:p:l:")) != -1) {
		switch (ch) {
		case 'w':
			nslots = (int)strtol(optarg, NULL, 10);
			if (nslots < 1 || nslots > SUPERVISE_WORKERS_MAX)
				usage();
			break;
		case 'p':
			pid_file = optarg;
			break;
		case 'l':
			log_file = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind >= argc)
		usage();
	prog_argv = argv + optind;
	/* the program is the last word (a MAILKIT_WRAPPER such as valgrind comes first) */
	prog_name = argv[argc - 1];
	if ((slash = strrchr(prog_name, '/')) != NULL)
		prog_name = slash + 1;
	if (log_init("mailkit-supervise", log_file) == -1)
		fatal("cannot open %s: %s", log_file, strerror(errno));
	/* tells the program the socket is shared with us (see server.c) */
	setenv("MAILKIT_SUPERVISED", "1", 1);

	/* every signal we act on is taken synchronously by sigtimedwait */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);

	for (int i = 0; i < nslots; i++)
		if (supervise_start(&slots[i]) == -1)
			slots[i].start_at_ms = clock_ms() + SUPERVISE_BACKOFF_FIRST_MS;
	supervise_write_pids();
	log_info("supervising %s (%d process%s)", prog_name, nslots, nslots == 1 ? "" : "es");

	for (;;) {
		long long	 next = -1, now;
		struct timespec	 ts, *tsp = NULL;
		int		 status, sig, changed = 0;
		pid_t		 pid;

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (int i = 0; i < nslots; i++) {
				if (slots[i].pid != pid)
					continue;
				if (stopping)
					slots[i].pid = 0;
				else
					supervise_died(&slots[i], pid, status);
				changed = 1;
			}
		}
		now = clock_ms();
		running = 0;
		for (int i = 0; i < nslots; i++) {
			if (slots[i].pid == 0 && !stopping && slots[i].start_at_ms <= now) {
				if (supervise_start(&slots[i]) == 0) {
					log_info("%s restarted as pid %ld", prog_name, (long)slots[i].pid);
					changed = 1;
				} else
					slots[i].start_at_ms = now + SUPERVISE_BACKOFF_FIRST_MS;
			}
			if (slots[i].pid > 0)
				running++;
			else if (!stopping && (next == -1 || slots[i].start_at_ms < next))
				next = slots[i].start_at_ms;
		}
		if (changed)
			supervise_write_pids();
		if (stopping && running == 0)
			break;
		if (next != -1) {
			long long wait = next > now ? next - now : 0;

			ts.tv_sec = wait / 1000;
			ts.tv_nsec = (wait % 1000) * 1000000;
			tsp = &ts;
		}
		sig = sigtimedwait(&sigs, NULL, tsp);
		if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && !stopping) {
			stopping = 1;
			log_info("stopping %s", prog_name);
			for (int i = 0; i < nslots; i++)
				if (slots[i].pid > 0)
					kill(slots[i].pid, SIGTERM);
			/* refuse new connections and wake every thread blocked in accept() */
			shutdown(STDIN_FILENO, SHUT_RDWR);
		}
	}
	if (pid_file != NULL)
		unlink(pid_file);
	log_info("%s stopped", prog_name);
	return 0;
}
