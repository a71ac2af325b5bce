/* Open-loop memcached load generator for `corral bench colocation`.
 *
 * One thread, epoll + a timerfd on CLOCK_MONOTONIC: requests are sent on a Poisson schedule
 * (exponential gaps at the segment's mean rate) whatever the server does, round-robin over
 * N connections, and each request's latency is measured from its *scheduled* send time, so
 * a stalled server or a late client shows up as latency (no coordinated omission).
 * Responses on one connection come back in order, so a FIFO of scheduled times per
 * connection pairs them.
 *
 * Output: one JSON line per window on stdout (flushed), then a final {"end":...} line.
 * Each window reports what was sent and completed, p50/p99/max latency of the requests
 * completed in it, the pacing lag (how late the client itself sent, the host-noise signal)
 * and the CPU the generator used (getrusage), so the benchmark can subtract it.
 *
 * Usage: loadgen PORT CONNS WINDOW_MS KEYS SEED SCHEDULE
 *   SCHEDULE = "seconds:rate,seconds:rate,..." (rate in requests/s, 0 pauses)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <math.h>
#include <unistd.h>

#define RING 65536
#define OUTBUF 262144
#define MAXCONN 64
#define MAXSEG 4096

typedef struct {
    int fd;
    uint64_t sched[RING];
    unsigned head, tail; /* pop at head, push at tail */
    char out[OUTBUF];
    size_t outlen;
    int want_out;
    int match; /* progress through "END\r\n" */
} conn_t;

static conn_t conns[MAXCONN];
static double seg_dur[MAXSEG], seg_rate[MAXSEG];
static int nseg;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* window accumulators */
static uint64_t *lat;
static size_t nlat, caplat;
static uint64_t w_sent, w_done, w_dropped, w_lagcount;
static double w_lagsum, w_lagmax;

static void record(uint64_t v) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) { perror("realloc"); exit(3); }
    }
    lat[nlat++] = v;
}

static double pct(double p) {
    if (nlat == 0) return -1;
    size_t i = (size_t)ceil(p * (double)nlat) - 1;
    if (i >= nlat) i = nlat - 1;
    return lat[i] / 1e6;
}

static double rate_at(double t) {
    double acc = 0;
    for (int i = 0; i < nseg; i++) {
        acc += seg_dur[i];
        if (t < acc) return seg_rate[i];
    }
    return -1; /* past the end */
}

static void emit(int idx, double t0, double rate, double cpu) {
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("{\"window\":%d,\"t\":%.3f,\"rate\":%.1f,\"sent\":%llu,\"done\":%llu,"
           "\"dropped\":%llu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,"
           "\"lag_max_ms\":%.4f,\"lag_mean_ms\":%.4f,\"cpu\":%.4f}\n",
           idx, t0, rate, (unsigned long long)w_sent, (unsigned long long)w_done,
           (unsigned long long)w_dropped, pct(0.5), pct(0.99),
           nlat ? lat[nlat - 1] / 1e6 : -1.0, w_lagmax / 1e6,
           w_lagcount ? w_lagsum / w_lagcount / 1e6 : 0.0, cpu);
    fflush(stdout);
    nlat = 0;
    w_sent = w_done = w_dropped = w_lagcount = 0;
    w_lagsum = w_lagmax = 0;
}

static void flush_out(conn_t *c, int ep) {
    while (c->outlen) {
        ssize_t n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            perror("send");
            exit(4);
        }
        memmove(c->out, c->out + n, c->outlen - (size_t)n);
        c->outlen -= (size_t)n;
    }
    int want = c->outlen > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
                                 .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s PORT CONNS WINDOW_MS KEYS SEED SCHEDULE\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), nconn = atoi(argv[2]), keys = atoi(argv[4]);
    double window = atof(argv[3]) / 1000.0;
    unsigned short seed[3] = {(unsigned short)atoi(argv[5]), 0x330e, 0x1234};
    if (nconn < 1 || nconn > MAXCONN || keys < 1 || window <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char *sched = strdup(argv[6]);
    for (char *tok = strtok(sched, ","); tok && nseg < MAXSEG; tok = strtok(NULL, ",")) {
        if (sscanf(tok, "%lf:%lf", &seg_dur[nseg], &seg_rate[nseg]) != 2) {
            fprintf(stderr, "bad schedule segment %s\n", tok);
            return 2;
        }
        nseg++;
    }
    double total = 0;
    for (int i = 0; i < nseg; i++) total += seg_dur[i];

    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) {
            perror("fcntl");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

    uint64_t start = now_ns() + 20000000ull; /* 20 ms to settle */
    uint64_t next_send = start;
    uint64_t window_ns = (uint64_t)(window * 1e9);
    uint64_t next_window = start + window_ns;
    uint64_t end = start + (uint64_t)(total * 1e9);
    int widx = 0, rr = 0;
    double cpu_mark = cpu_s();
    uint64_t outstanding = 0, sent_all = 0, done_all = 0;
    /* first gap */
    {
        double r = rate_at(0);
        if (r <= 0) next_send = start + (uint64_t)(0.001 * 1e9);
        else next_send = start + (uint64_t)(-log(1.0 - erand48(seed)) / r * 1e9);
    }
    char buf[65536], req[64];
    struct epoll_event evs[MAXCONN + 1];
    for (;;) {
        uint64_t now = now_ns();
        /* send everything that is due, one write per connection */
        int dirty = 0;
        while (next_send <= now && next_send < end) {
            double t = (next_send - start) / 1e9;
            double r = rate_at(t);
            if (r > 0) {
                conn_t *c = &conns[rr];
                rr = (rr + 1) % nconn;
                if (c->tail - c->head >= RING || c->outlen + sizeof req > OUTBUF) {
                    w_dropped++;
                } else {
                    int k = (int)(erand48(seed) * keys);
                    int n = snprintf(req, sizeof req, "get key:%d\r\n", k);
                    memcpy(c->out + c->outlen, req, (size_t)n);
                    c->outlen += (size_t)n;
                    c->sched[c->tail % RING] = next_send;
                    c->tail++;
                    outstanding++;
                    sent_all++;
                    w_sent++;
                    double lag = (double)(now - next_send);
                    w_lagsum += lag;
                    w_lagcount++;
                    if (lag > w_lagmax) w_lagmax = lag;
                    dirty = 1;
                }
                next_send += (uint64_t)(-log(1.0 - erand48(seed)) / r * 1e9);
            } else {
                next_send += 1000000ull; /* paused: look again in 1 ms */
            }
        }
        if (dirty)
            for (int i = 0; i < nconn; i++)
                if (conns[i].outlen) flush_out(&conns[i], ep);
        while (now >= next_window && next_window <= end + window_ns) {
            double c = cpu_s();
            double t0 = (next_window - window_ns - start) / 1e9;
            emit(widx++, t0, rate_at(t0 + window / 2), (c - cpu_mark) / window);
            cpu_mark = c;
            next_window += window_ns;
        }
        if (now >= end + 1000000000ull || (now >= end && outstanding == 0)) break;
        uint64_t wake = next_send < next_window ? next_send : next_window;
        if (now >= end) wake = now + 1000000ull;
        struct itimerspec its = {0};
        its.it_value.tv_sec = (time_t)(wake / 1000000000ull);
        its.it_value.tv_nsec = (long)(wake % 1000000000ull);
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        int n = epoll_wait(ep, evs, MAXCONN + 1, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        uint64_t t_now = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                uint64_t x;
                while (read(tfd, &x, sizeof x) > 0) {}
                continue;
            }
            if (evs[i].events & EPOLLOUT) flush_out(c, ep);
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                ssize_t got = recv(c->fd, buf, sizeof buf, 0);
                if (got < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    perror("recv");
                    return 1;
                }
                if (got == 0) {
                    fprintf(stderr, "server closed the connection\n");
                    return 1;
                }
                static const char end_tok[] = "END\r\n";
                for (ssize_t j = 0; j < got; j++) {
                    if (buf[j] == end_tok[c->match]) {
                        if (++c->match == 5) {
                            c->match = 0;
                            if (c->head != c->tail) {
                                uint64_t s = c->sched[c->head % RING];
                                c->head++;
                                outstanding--;
                                done_all++;
                                w_done++;
                                record(t_now > s ? t_now - s : 0);
                            }
                        }
                    } else {
                        c->match = buf[j] == 'E' ? 1 : 0;
                    }
                }
                if ((size_t)got < sizeof buf) break;
            }
        }
    }
    printf("{\"end\":1,\"sent\":%llu,\"done\":%llu,\"lost\":%llu,\"cpu_s\":%.4f}\n",
           (unsigned long long)sent_all, (unsigned long long)done_all,
           (unsigned long long)outstanding, cpu_s());
    fflush(stdout);
    return 0;
}
