/*
 * edgelab's NFQUEUE packet delayer, in C: the same engine as delayer.py, for less CPU per packet.
 *
 * Why a second implementation: in a 100-station cell probing at 100/s each (~20,000 queue passes/s)
 * delayer.py spent 10-12 us of user time per pass (the netfilterqueue callback into Python, a Packet
 * object, heapq, a deque), released packets 0.44 ms late on average, and the probes' delay exceeded
 * the configured one by +0.7 to +2.3 ms (issue 15). This program does the same work with
 * libnetfilter_queue (the library the Python binding wraps) in ~2 us of user time per pass: 0.04-0.12 ms
 * late, a median error of +0.44 ms (benchmarks/fidelity_under_load.py, README). Most of a pass's CPU is
 * the kernel's either way: it forwards the accepted packet inside the verdict call.
 *
 * Contract (edgelab/linkemu/emulator.py drives both engines the same way):
 *   nfq_delayer --config <dir>/delayer.json [--tag T] [--seed S]
 * - reads the queues from "<config>.tab" (emulator._dl_save writes it beside the JSON, which this
 *   program does not parse), at start and on every SIGHUP;
 * - writes "<generation> <pid>\n" to "<config>.ready" (atomically) once the queues are bound;
 * - rewrites "<dir>/delayer-stats.json" in place, every 0.25 s while packets flow, with the record
 *   edgelab.linkemu.lateness.read checks: "<json>\n<crc32 hex>\n" padded to 512 bytes;
 * - SIGTERM/SIGINT: releases every held packet at once, unbinds, exits 0.
 * Semantics (see delayer.py's docstring, which is the reference): per queue a FIFO; release at
 * arrival + delay + U(-jitter, +jitter), never before the queue's previous release (no
 * reordering); a heap of queue heads and one absolute CLOCK_MONOTONIC timerfd; a bridge queue
 * dispatches a frame to its in-port stage (by mark) and then its out-port stage (by physoutdev),
 * the out-stage entered at the instant the in-stage released it.
 *
 * "<config>.tab", one record per line, fields separated by single spaces:
 *   edgelab-delayer-tab 1
 *   generation <g>
 *   ns <key> <netns path | ->
 *   q <num> <delay_ns> <jitter_ns> <plain|bridge|from-peer|to-peer> <via | -1> <dev | ->
 * ("q" lines belong to the "ns" line above them).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/netfilter.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <libnfnetlink/libnfnetlink.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define MAX_QUEUE_LEN 65536u           /* as delayer.py */
#define SOCK_RCVBUF (16u * 1024 * 1024)
#define LATE_NS 1000000LL              /* lateness.LATE_S */
#define STATS_EVERY_NS 250000000LL     /* delayer.STATS_EVERY_S */
#define STATS_RECORD 512               /* delayer.STATS_RECORD */
#define STATS_FILE "delayer-stats.json"
#define RECV_BATCH 64                  /* messages read from one queue before the loop looks around */

enum kind { K_PLAIN, K_BRIDGE, K_FROM, K_TO };

struct queue;

struct pkt {
    int64_t t;                         /* due (ns, CLOCK_MONOTONIC) */
    uint32_t id;
    struct nfq_q_handle *qh;           /* the bound queue that owes the verdict */
    struct queue *next;                /* a bridge's out-port stage, or NULL */
};

struct port { uint32_t key; struct queue *q; };

struct queue {
    int ns;                            /* index in spaces[] */
    int num;
    int64_t delay, jitter;
    enum kind kind;
    int via;                           /* a port stage's bridge queue, else -1 */
    char dev[IF_NAMESIZE];
    int index;                         /* heap tie-break: creation order, as delayer.py */
    int64_t last_release;
    struct nfq_handle *h;              /* bound queues only */
    struct nfq_q_handle *qh;
    int fd;
    struct pkt *ring;                  /* FIFO: ring buffer */
    size_t cap, head, len;
    struct port *ins, *outs;           /* a bridge queue's stages: by mark, by ifindex (sorted) */
    size_t nins, nouts;
};

struct space { char *key; char *netns; int seen; };

struct heapent { int64_t t; int index; struct queue *q; };

static struct queue **queues;
static size_t nqueues, capqueues;
static struct space *spaces;
static size_t nspaces, capspaces;
static struct heapent *heap;
static size_t nheap, capheap;
static int next_index;
static int home_ns = -1, epfd = -1;
static const char *config_path;
static char *stats_path, *ready_path, *tab_path;
static int stats_fd = -1;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
/* released, late_sum (ns), late (> 1 ms), late_max (ns), ENOBUFS seen on queue sockets */
static uint64_t c_released, c_late, c_enobufs;
static int64_t c_late_sum, c_late_max;

static void die(const char *fmt, ...);

static void *xrealloc(void *p, size_t n) {
    void *r = realloc(p, n ? n : 1);
    if (!r) die("out of memory (%zu bytes)", n);
    return r;
}

static int64_t mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* xorshift64*: the jitter's draws (uniform; seeded by --seed for a reproducible run) */
static double uniform01(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* ---------------------------------------------------------------- heap of queue heads */
static int heap_less(const struct heapent *a, const struct heapent *b) {
    return a->t < b->t || (a->t == b->t && a->index < b->index);
}

static void heap_push(int64_t t, struct queue *q) {
    if (nheap == capheap) {
        capheap = capheap ? 2 * capheap : 256;
        heap = xrealloc(heap, capheap * sizeof *heap);
    }
    size_t i = nheap++;
    struct heapent e = {t, q->index, q};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &heap[p])) break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i] = e;
}

static struct heapent heap_pop(void) {
    struct heapent top = heap[0], last = heap[--nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct heapent *best = &last;
        if (l < nheap && heap_less(&heap[l], best)) { m = l; best = &heap[l]; }
        if (r < nheap && heap_less(&heap[r], best)) { m = r; }
        if (m == i) break;
        heap[i] = heap[m];
        i = m;
    }
    if (nheap) heap[i] = last;
    return top;
}

/* ---------------------------------------------------------------- per-queue FIFO */
static void ring_push(struct queue *q, struct pkt p) {
    if (q->len == q->cap) {
        size_t ncap = q->cap ? 2 * q->cap : 64;
        struct pkt *n = xrealloc(NULL, ncap * sizeof *n);
        for (size_t i = 0; i < q->len; i++) n[i] = q->ring[(q->head + i) % q->cap];
        free(q->ring);
        q->ring = n;
        q->cap = ncap;
        q->head = 0;
    }
    q->ring[(q->head + q->len) % q->cap] = p;
    q->len++;
}

static struct pkt ring_pop(struct queue *q) {
    struct pkt p = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return p;
}

static void accept_pkt(const struct pkt *p) {
    nfq_set_verdict(p->qh, p->id, NF_ACCEPT, 0, NULL);
}

/* Hold a packet in q from instant t0 (then in nxt, or release it): delayer.py's enter(). */
static void enter(struct queue *q, int64_t t0, uint32_t id, struct nfq_q_handle *qh, struct queue *nxt) {
    int64_t t = t0 + q->delay;
    if (q->jitter) t += (int64_t)((2.0 * uniform01() - 1.0) * (double)q->jitter);
    if (t < q->last_release) t = q->last_release;
    q->last_release = t;
    if (q->len == 0) heap_push(t, q);
    ring_push(q, (struct pkt){t, id, qh, nxt});
}

/* Release everything due at now, one packet at a time in release order. */
static void release_due(int64_t now) {
    while (nheap && heap[0].t <= now) {
        struct queue *q = heap_pop().q;
        if (!q->len) continue;
        struct pkt p = ring_pop(q);
        if (p.next == NULL) {
            accept_pkt(&p);
            int64_t late = now - p.t;
            c_released++;
            c_late_sum += late;
            if (late > LATE_NS) c_late++;
            if (late > c_late_max) c_late_max = late;
        } else {
            enter(p.next, p.t, p.id, p.qh, NULL);
        }
        if (q->len) heap_push(q->ring[q->head].t, q);
    }
}

static struct queue *port_find(struct port *v, size_t n, uint32_t key) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (v[m].key == key) return v[m].q;
        if (v[m].key < key) lo = m + 1; else hi = m;
    }
    return NULL;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
    (void)msg;
    struct queue *q = data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    uint32_t id = ntohl(ph->packet_id);
    int64_t now = mono();
    if (q->kind != K_BRIDGE) {
        enter(q, now, id, qh, NULL);
        return 0;
    }
    struct queue *qi = port_find(q->ins, q->nins, nfq_get_nfmark(nfa));
    struct queue *qo = port_find(q->outs, q->nouts, nfq_get_physoutdev(nfa));
    if (qi) enter(qi, now, id, qh, qo);
    else if (qo) enter(qo, now, id, qh, NULL);
    else nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);   /* between two undelayed ports */
    return 0;
}

/* ---------------------------------------------------------------- files */
static uint32_t crc32_of(const char *s, size_t n) {
    static uint32_t table[256];
    if (!table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ (uint8_t)s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* edgelab.safefs.write_atomic: a fresh O_EXCL|O_NOFOLLOW temporary file beside path, renamed over it */
static int write_atomic(const char *path, const char *data, size_t n) {
    char tmp[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path + 1) : 0;
    if (snprintf(tmp, sizeof tmp, "%.*s.%s.%d.%08x.tmp", dl, path, slash ? slash + 1 : path, (int)getpid(),
                 (unsigned)(uniform01() * 4294967295.0)) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    ssize_t w = write(fd, data, n);
    int e = errno;
    close(fd);
    if (w != (ssize_t)n || rename(tmp, path) != 0) {
        if (w == (ssize_t)n) e = errno;
        unlink(tmp);
        errno = w < 0 || w == (ssize_t)n ? e : EIO;
        return -1;
    }
    return 0;
}

/* The lateness record (delayer.dump_lateness's format), rewritten in place with one pwrite. */
static void dump_lateness(void) {
    char body[STATS_RECORD], rec[STATS_RECORD + 1];
    int n = snprintf(body, sizeof body,
                     "{\"released\": %" PRIu64 ", \"late_sum_s\": %.9f, \"late\": %" PRIu64
                     ", \"late_max_s\": %.9f, \"pid\": %d, \"engine\": \"c\", \"enobufs\": %" PRIu64 "}",
                     c_released, (double)c_late_sum / 1e9, c_late, (double)c_late_max / 1e9, (int)getpid(),
                     c_enobufs);
    int m = snprintf(rec, sizeof rec, "%s\n%08x\n", body, crc32_of(body, (size_t)n));
    memset(rec + m, ' ', STATS_RECORD - (size_t)m);
    if (stats_fd < 0) {
        if (write_atomic(stats_path, rec, STATS_RECORD) != 0) {
            fprintf(stderr, "delayer: cannot write %s: %s\n", stats_path, strerror(errno));
            return;
        }
        stats_fd = open(stats_path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        return;
    }
    if (pwrite(stats_fd, rec, STATS_RECORD, 0) != STATS_RECORD)
        fprintf(stderr, "delayer: cannot rewrite %s: %s\n", stats_path, strerror(errno));
}

/* ---------------------------------------------------------------- namespaces and queues */
static void enter_ns(const char *netns) {
    if (!netns) return;
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open network namespace %s: %s", netns, strerror(errno));
    if (setns(fd, CLONE_NEWNET) != 0) die("setns %s: %s", netns, strerror(errno));
    close(fd);
}

static void leave_ns(const char *netns) {
    if (netns && setns(home_ns, CLONE_NEWNET) != 0) die("setns back home: %s", strerror(errno));
}

static void bind_queue(struct queue *q) {
    q->h = nfq_open();
    if (!q->h) die("queue %d in %s: nfq_open: %s", q->num, spaces[q->ns].key, strerror(errno));
    q->qh = nfq_create_queue(q->h, (uint16_t)q->num, on_packet, q);
    if (!q->qh) die("queue %d in %s: cannot bind it (another process holds it?): %s", q->num,
                    spaces[q->ns].key, strerror(errno));
    if (nfq_set_mode(q->qh, NFQNL_COPY_META, 0) < 0)
        die("queue %d in %s: cannot set copy mode: %s", q->num, spaces[q->ns].key, strerror(errno));
    nfq_set_queue_maxlen(q->qh, MAX_QUEUE_LEN);
    nfnl_rcvbufsiz(nfq_nfnlh(q->h), SOCK_RCVBUF);
    q->fd = nfq_fd(q->h);
    int fl = fcntl(q->fd, F_GETFL);
    fcntl(q->fd, F_SETFL, fl | O_NONBLOCK);
    fcntl(q->fd, F_SETFD, FD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = q};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, q->fd, &ev) != 0) die("epoll_ctl: %s", strerror(errno));
}

static void flush(struct queue *q) {
    while (q->len) {
        struct pkt p = ring_pop(q);
        accept_pkt(&p);
    }
}

static struct queue *find_queue(int ns, int num) {
    for (size_t i = 0; i < nqueues; i++)
        if (queues[i]->ns == ns && queues[i]->num == num) return queues[i];
    return NULL;
}

/* Release what q holds (its frames skip any next stage), unbind it if bound, forget it. */
static void drop_queue(struct queue *q) {
    if (q->kind == K_BRIDGE) {
        /* its frames wait in its ports' stages too: their verdicts need this queue still bound */
        for (size_t i = 0; i < nqueues; i++) {
            struct queue *s = queues[i];
            if (s->ns == q->ns && s->via == q->num && (s->kind == K_FROM || s->kind == K_TO)) flush(s);
        }
    }
    flush(q);
    if (q->kind == K_FROM || q->kind == K_TO) {
        /* frames held in an in-stage may name this stage as their next one: they now skip it (as
         * delayer.py's do a stage that is no longer live); the heap is rebuilt after a reload */
        for (size_t i = 0; i < nqueues; i++)
            for (size_t k = 0; k < queues[i]->len; k++) {
                struct pkt *p = &queues[i]->ring[(queues[i]->head + k) % queues[i]->cap];
                if (p->next == q) p->next = NULL;
            }
    }
    if (q->qh) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, q->fd, NULL);
        nfq_destroy_queue(q->qh);
        nfq_close(q->h);
        q->qh = NULL;
        q->h = NULL;
    }
    free(q->ring);
    free(q->ins);
    free(q->outs);
    for (size_t i = 0; i < nqueues; i++)
        if (queues[i] == q) { queues[i] = queues[--nqueues]; break; }
    free(q);
}

static int space_index(const char *key, const char *netns) {
    for (size_t i = 0; i < nspaces; i++)
        if (strcmp(spaces[i].key, key) == 0) {
            if ((spaces[i].netns == NULL) != (netns == NULL) || (netns && strcmp(spaces[i].netns, netns))) {
                free(spaces[i].netns);
                spaces[i].netns = netns ? strdup(netns) : NULL;
            }
            return (int)i;
        }
    if (nspaces == capspaces) {
        capspaces = capspaces ? 2 * capspaces : 64;
        spaces = xrealloc(spaces, capspaces * sizeof *spaces);
    }
    spaces[nspaces] = (struct space){strdup(key), netns ? strdup(netns) : NULL, 0};
    return (int)nspaces++;
}

static int cmp_port(const void *a, const void *b) {
    uint32_t x = ((const struct port *)a)->key, y = ((const struct port *)b)->key;
    return x < y ? -1 : x > y;
}

/* Rebuild the port tables of space ns's bridge queues (out-ports' names resolved inside it). */
static void map_ports(int ns) {
    int any = 0;
    for (size_t i = 0; i < nqueues; i++) any |= queues[i]->ns == ns && queues[i]->kind == K_BRIDGE;
    if (!any) return;
    enter_ns(spaces[ns].netns);
    for (size_t b = 0; b < nqueues; b++) {
        struct queue *br = queues[b];
        if (br->ns != ns || br->kind != K_BRIDGE) continue;
        br->nins = br->nouts = 0;
        for (size_t i = 0; i < nqueues; i++) {
            struct queue *s = queues[i];
            if (s->ns != ns || s->via != br->num) continue;
            struct port pt = {0, s};
            if (s->kind == K_FROM) {
                pt.key = (uint32_t)s->num;   /* the ports table marks its frames with the stage's number */
                br->ins = xrealloc(br->ins, (br->nins + 1) * sizeof *br->ins);
                br->ins[br->nins++] = pt;
            } else if (s->kind == K_TO) {
                unsigned idx = if_nametoindex(s->dev);
                if (!idx) {
                    fprintf(stderr, "delayer: port '%s' of bridge queue %d not found in %s\n", s->dev, br->num,
                            spaces[ns].key);
                    continue;
                }
                pt.key = idx;
                br->outs = xrealloc(br->outs, (br->nouts + 1) * sizeof *br->outs);
                br->outs[br->nouts++] = pt;
            }
        }
        qsort(br->ins, br->nins, sizeof *br->ins, cmp_port);
        qsort(br->outs, br->nouts, sizeof *br->outs, cmp_port);
    }
    leave_ns(spaces[ns].netns);
}

struct spec { int ns; int num; int64_t delay, jitter; enum kind kind; int via; char dev[IF_NAMESIZE]; };

static void apply_config(void) {
    FILE *f = fopen(tab_path, "re");
    if (!f) die("cannot read %s: %s", tab_path, strerror(errno));
    struct spec *specs = NULL;
    size_t nspecs = 0;
    long gen = -1;
    int cur = -1, lineno = 0;
    char line[4096 + 64];
    for (size_t i = 0; i < nspaces; i++) spaces[i].seen = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) die("%s:%d: line too long", tab_path, lineno);
        line[strcspn(line, "\n")] = 0;
        char a[4096], b[4096], dev[64], kind[16];
        long long d, j;
        int num, via;
        if (lineno == 1) {
            if (strcmp(line, "edgelab-delayer-tab 1") != 0) die("%s:1: not a delayer table (version 1)", tab_path);
        } else if (sscanf(line, "generation %ld", &gen) == 1) {
        } else if (sscanf(line, "ns %4095s %4095s", a, b) == 2) {
            cur = space_index(a, strcmp(b, "-") ? b : NULL);
            spaces[cur].seen = 1;
        } else if (sscanf(line, "q %d %lld %lld %15s %d %63s", &num, &d, &j, kind, &via, dev) == 6 && cur >= 0) {
            struct spec s = {cur, num, d, j, K_PLAIN, via, ""};
            if (num < 0 || num > 65535 || d < 0 || j < 0 || strlen(dev) >= IF_NAMESIZE)
                die("%s:%d: bad queue: %s", tab_path, lineno, line);
            if (!strcmp(kind, "bridge")) s.kind = K_BRIDGE;
            else if (!strcmp(kind, "from-peer")) s.kind = K_FROM;
            else if (!strcmp(kind, "to-peer")) s.kind = K_TO;
            else if (strcmp(kind, "plain")) die("%s:%d: unknown queue kind %s", tab_path, lineno, kind);
            if ((s.via >= 0) != (s.kind == K_FROM || s.kind == K_TO))
                die("%s:%d: a port stage needs a bridge queue (via) and from-peer/to-peer: %s", tab_path, lineno, line);
            if (strcmp(dev, "-")) strcpy(s.dev, dev);
            specs = xrealloc(specs, (nspecs + 1) * sizeof *specs);
            specs[nspecs++] = s;
        } else if (line[0]) {
            die("%s:%d: cannot parse: %s", tab_path, lineno, line);
        }
    }
    fclose(f);
    if (gen < 0) die("%s: no generation line", tab_path);
    /* queues gone, or changed between bound and stage, or bridge and not */
    for (size_t i = nqueues; i-- > 0;) {
        struct queue *q = queues[i];
        struct spec *w = NULL;
        for (size_t k = 0; k < nspecs && !w; k++)
            if (specs[k].ns == q->ns && specs[k].num == q->num && spaces[q->ns].seen) w = &specs[k];
        int was_stage = q->kind == K_FROM || q->kind == K_TO, is_stage = w && (w->kind == K_FROM || w->kind == K_TO);
        if (!w || was_stage != is_stage || (w->kind == K_BRIDGE) != (q->kind == K_BRIDGE)) {
            drop_queue(q);
            if (i > nqueues) i = nqueues;
        }
    }
    for (size_t k = 0; k < nspecs; k++) {
        struct spec *s = &specs[k];
        struct queue *q = find_queue(s->ns, s->num);
        if (q) {
            q->delay = s->delay;
            q->jitter = s->jitter;
            if (s->via >= 0) { q->via = s->via; q->kind = s->kind; strcpy(q->dev, s->dev); }
            continue;
        }
        q = xrealloc(NULL, sizeof *q);
        memset(q, 0, sizeof *q);
        q->ns = s->ns; q->num = s->num; q->delay = s->delay; q->jitter = s->jitter;
        q->kind = s->kind; q->via = s->via; q->fd = -1; q->index = ++next_index;
        strcpy(q->dev, s->dev);
        if (s->via < 0) {
            enter_ns(spaces[s->ns].netns);
            bind_queue(q);
            leave_ns(spaces[s->ns].netns);
        }
        if (nqueues == capqueues) {
            capqueues = capqueues ? 2 * capqueues : 256;
            queues = xrealloc(queues, capqueues * sizeof *queues);
        }
        queues[nqueues++] = q;
    }
    free(specs);
    for (size_t i = 0; i < nspaces; i++)
        if (spaces[i].seen) map_ports((int)i);
    /* the heap may point at queues just dropped: rebuild it from the live ones */
    nheap = 0;
    for (size_t i = 0; i < nqueues; i++)
        if (queues[i]->len) heap_push(queues[i]->ring[queues[i]->head].t, queues[i]);
    char ready[64];
    int n = snprintf(ready, sizeof ready, "%ld %d\n", gen, (int)getpid());
    if (write_atomic(ready_path, ready, (size_t)n) != 0) die("cannot write %s: %s", ready_path, strerror(errno));
}

static void shutdown_all(void) {
    /* port stages first: their frames' verdicts go through their bridge queue, still bound */
    for (size_t i = nqueues; i-- > 0;)
        if (queues[i]->kind == K_FROM || queues[i]->kind == K_TO) drop_queue(queues[i]);
    while (nqueues) drop_queue(queues[nqueues - 1]);
    dump_lateness();
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("delayer: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    static int dying;
    if (!dying && stats_path) {   /* release what is held: a dead delayer must not keep packets */
        dying = 1;
        if (home_ns >= 0) setns(home_ns, CLONE_NEWNET);
        shutdown_all();
    }
    exit(1);
}

/* Read what one queue's socket holds, up to RECV_BATCH messages. */
static void drain(struct queue *q) {
    static char buf[65536] __attribute__((aligned(8)));
    for (int i = 0; i < RECV_BATCH; i++) {
        ssize_t n = recv(q->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            if (errno == ENOBUFS) { c_enobufs++; continue; }   /* the kernel dropped what did not fit */
            die("queue %d in %s: recv: %s", q->num, spaces[q->ns].key, strerror(errno));
        }
        nfq_handle_packet(q->h, buf, (int)n);
        if (nheap) {
            int64_t now = mono();
            if (heap[0].t <= now) release_due(now);
        }
    }
}

static void arm(int tfd, int64_t at) {
    struct itimerspec its = {{0, 0}, {at / 1000000000LL, at % 1000000000LL}};
    if (at > 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0) die("timerfd_settime: %s", strerror(errno));
}

int main(int argc, char **argv) {
    long long seed = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config_path = argv[++i];
        else if (!strcmp(argv[i], "--tag") && i + 1 < argc) i++;   /* only to make the process findable */
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s --config <dir>/delayer.json [--tag T] [--seed S]\n", argv[0]);
            return 2;
        }
    }
    if (!config_path) {
        fprintf(stderr, "usage: %s --config <dir>/delayer.json [--tag T] [--seed S]\n", argv[0]);
        return 2;
    }
    if (seed >= 0) rng_state = (uint64_t)seed * 0x9e3779b97f4a7c15ULL + 1;
    else rng_state ^= (uint64_t)mono() ^ ((uint64_t)getpid() << 32);
    if (!rng_state) rng_state = 1;
    size_t cl = strlen(config_path);
    tab_path = xrealloc(NULL, cl + 8);
    ready_path = xrealloc(NULL, cl + 8);
    snprintf(tab_path, cl + 8, "%s.tab", config_path);
    snprintf(ready_path, cl + 8, "%s.ready", config_path);
    const char *slash = strrchr(config_path, '/');
    size_t dl = slash ? (size_t)(slash - config_path + 1) : 0;
    stats_path = xrealloc(NULL, dl + sizeof STATS_FILE);
    memcpy(stats_path, config_path, dl);
    memcpy(stats_path + dl, STATS_FILE, sizeof STATS_FILE);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);   /* before the first ready: the controller may HUP at once */
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    home_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (sfd < 0 || tfd < 0 || epfd < 0 || home_ns < 0) die("setup: %s", strerror(errno));
    prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0);   /* 1 ns instead of 50 us */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &sfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
    ev.data.ptr = &tfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);

    dump_lateness();   /* the file, made once here: later dumps rewrite it in place */
    int stop = 0, reload = 1;
    int64_t armed = 0, next_dump = 0;
    uint64_t dumped = 0;
    struct epoll_event evs[64];
    while (!stop) {
        if (reload) {
            reload = 0;
            apply_config();
        }
        int64_t now = mono();
        release_due(now);
        if (now >= next_dump && c_released != dumped) {
            dump_lateness();
            dumped = c_released;
            next_dump = now + STATS_EVERY_NS;
        }
        int64_t nxt = nheap ? heap[0].t : 0;
        if (nxt != armed) {
            arm(tfd, nxt);
            armed = nxt;
        }
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &tfd) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) { /* spurious: nothing expired */ }
                armed = 0;
            } else if (evs[i].data.ptr == &sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo == SIGHUP) reload = 1;
                    else stop = 1;
                }
            } else {
                drain(evs[i].data.ptr);
            }
        }
    }
    shutdown_all();
    return 0;
}
