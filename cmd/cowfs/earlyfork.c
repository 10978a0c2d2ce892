//go:build cgo && linux

// The mount's fork, before the Go runtime starts.
//
// A mount that goes to the background needs two processes: the command, which
// returns once the filesystem is mounted, and the daemon that serves it. Go cannot
// fork once its runtime runs, so without this file the command re-executes its own
// binary as the daemon and a mount pays for two Go starts (13-14 ms each on the
// benchmark machine, most of a mount's 46 ms). This constructor runs first, from the
// C library's start-up code, while the process is still single-threaded C: for a
// command line that looks like a background mount it forks, and only the child goes
// on to start the Go runtime, parse the options, mount and serve. The parent never
// starts Go: it waits for the child's report on a pipe, and exits 0 on "ok\n";
// on an error line it prints it as the command's error and exits 1; when the child
// exits without a report (any command the guess below got wrong runs whole in the
// child) it exits as the child did. A SIGHUP, SIGINT, SIGQUIT or SIGTERM sent to the
// waiting command is passed on to the child and then ends the command, as it would
// end a single process; the child, not mounted yet, ends too (Go's default action).
//
// The guess is only an optimization: start.go decides for real, and a child that
// is not a background mount simply runs its command.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14; older kernels refuse it (EINVAL), harmlessly
#endif

// The program's code and read-only data are mapped up front, in one madvise per
// segment, in the process that goes on to start Go (the daemon, or any other
// command). Left to page faults, a Go start and a mount take 70 to 90 faults on
// these pages (with the kernel's fault-around, 16 pages each), and a fault costs
// about 13 µs on the benchmark machine, a virtual machine, against a fraction of that
// for each page mapped by MADV_POPULATE_READ. Mount, `ls` and umount: 34.4 and 34.5 ms
// without, 33.1 and 31.0 ms with (the mount command 20.1 and 19.6 ms against 18.3 and
// 17.5; 25 rounds each, alternated, medians). The cost: the whole 7.4 MB is mapped
// (page cache shared with every other cowfs process), where a daemon maps about 6.4
// MB of it anyway, and a cold start reads it all from disk.
static int populate_segment(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	(void)data;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W))
			continue; // writable data is copied on write: no gain from mapping it
		uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(uintptr_t)4095;
		uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + 4095) & ~(uintptr_t)4095;
		madvise((void *)start, end - start, MADV_POPULATE_READ);
	}
	return 1; // the first object is the program itself
}

static void populate_program(void) { dl_iterate_phdr(populate_segment, NULL); }

// cowfs_report_fd is the write end of the report pipe in the forked child, -1
// everywhere else (earlyfork_cgo.go reads it).
int cowfs_report_fd = -1;

static pid_t cowfs_child;

// flag_name returns a's name without its leading dashes and any "=value", in buf,
// or NULL when a is not a flag.
static const char *flag_name(const char *a, char *buf, size_t size) {
	if (a[0] != '-' || a[1] == '\0')
		return NULL;
	a += (a[1] == '-') ? 2 : 1;
	size_t n = strcspn(a, "=");
	if (n >= size)
		n = size - 1;
	memcpy(buf, a, n);
	buf[n] = '\0';
	return buf;
}

// background_mount guesses whether argv is a mount that goes to the background:
// the fuse-overlayfs form (an -o option) or `cowfs mount`, with no flag that keeps
// the command in the foreground or makes it print something and exit.
static int background_mount(int argc, char **argv) {
	if (argc < 3)
		return 0;
	int mount = strcmp(argv[1], "mount") == 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char buf[32];
		if (strcmp(a, "--") == 0)
			return 0; // positionals that look like flags: leave it to Go
		if (strstr(a, "debug") != NULL)
			return 0; // -o debug implies -f
		if (strncmp(a, "-o", 2) == 0) {
			mount = 1;
			continue;
		}
		const char *name = flag_name(a, buf, sizeof buf);
		if (name == NULL)
			continue;
		static const char *const stay[] = {"f", "foreground", "d", "h", "help", "V", "version", NULL};
		for (const char *const *s = stay; *s != NULL; s++)
			if (strcmp(name, *s) == 0)
				return 0;
	}
	return mount;
}

// forward passes a signal that would end the command on to the daemon, then lets it
// end the command: the daemon may be waiting in the kernel (on a FUSE mount that does
// not answer, say) where its Go handler cannot run yet, and the command must not wait
// for it (a timeout or a ^C ends it at once, as it would end any process).
static void forward(int sig) {
	if (cowfs_child > 0)
		kill(cowfs_child, sig);
	signal(sig, SIG_DFL);
	raise(sig); // delivered, by default, when this handler returns
}

static void write_all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void write_str(const char *s) { write_all(2, s, strlen(s)); }

__attribute__((constructor)) static void cowfs_early_fork(int argc, char **argv, char **envp) {
	(void)envp;
	if (argv == NULL || !background_mount(argc, argv)) {
		populate_program();
		return;
	}
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return; // the re-executing path of daemon_linux.go still works
	// Held back from the fork until the parent passes them on: one arriving in
	// between would end the parent alone and leave the child to mount.
	static const int sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM};
	sigset_t block, old;
	sigemptyset(&block);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaddset(&block, sigs[i]);
	sigprocmask(SIG_BLOCK, &block, &old);
	pid_t pid = fork();
	if (pid <= 0) {
		if (pid < 0) {
			close(p[0]);
			close(p[1]);
		} else {
			close(p[0]);
			cowfs_report_fd = p[1];
		}
		sigprocmask(SIG_SETMASK, &old, NULL);
		populate_program(); // after the fork: a child gets no mappings of these pages
		return;
	}
	close(p[1]);
	cowfs_child = pid;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = forward;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);

	char buf[4096];
	size_t n = 0;
	while (n < sizeof buf) {
		ssize_t r = read(p[0], buf + n, sizeof buf - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	if (n == 3 && memcmp(buf, "ok\n", 3) == 0)
		_exit(0); // the child serves the mount; init adopts it
	int status = 0;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = 1 << 8; // exit status 1
			break;
		}
	}
	if (n > 0) {
		// The daemon's one-line error, printed as run() prints an error.
		write_str("cowfs: ");
		write_all(2, buf, n);
		if (buf[n - 1] != '\n')
			write_str("\n");
		_exit(1);
	}
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		const char *s = strsignal(WTERMSIG(status));
		write_str("cowfs: the daemon exited before mounting: signal: ");
		write_str(s);
		write_str("\n");
	}
	_exit(1);
}
