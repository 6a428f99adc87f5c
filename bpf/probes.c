// netwarden kernel probes (compiled by bcc; loaded by bpf/loader.py).
//
// Rules this file follows, and why:
// * Kernel structs are never dereferenced through header definitions: the installed headers
//   need not match the running kernel. Every struct field is read with bpf_probe_read_kernel()
//   at an OFF_* byte offset that loader.py computed from /sys/kernel/btf/vmlinux and passed
//   as a -D macro.
// * Tracepoint arguments come from structs (struct tp_*) that loader.py generates from each
//   tracepoint's format file in tracefs, so field offsets are the running kernel's too.
// * Packet headers (IPv4/IPv6/TCP/UDP) are wire formats: parsed from skb->head + offsets.
// * Per-event work is small and nothing is sent to user space per packet. A TCP connection
//   lives in a slot of the tcp_conns table, which user space maps: it reads connections still
//   open from there (a long one is reported while it lasts). A closed one is copied to this
//   CPU's ring of closed connections (tcp_closed), also mapped by user space: no lock, no
//   wake-up, ~20 ns, where a BPF ring buffer write cost ~170 ns here (its reserve takes a
//   spinlock shared by all CPUs), two per connection: a fifth of what the probes cost a short
//   connection. UDP is aggregated in a hash map that user space drains; drops and resets are
//   one ring buffer record each.
// * The hot hooks (inet_sock_set_state, sock_send_length, sock_recv_length) are raw
//   tracepoints: the kernel does not format a trace record for them first, and the
//   state changes we ignore cost little more than the call (measured: a raw tracepoint
//   ~70 ns per hit here, a classic one ~120 ns). Their arguments' types are checked against
//   the running kernel's BTF (btf_trace_<name>) before loading.
// * Nothing is lost silently: a failed ring buffer write or a full UDP map is counted in
//   `stats`, which user space reads.

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9

#define EV_RESET 3
#define EV_DROP 4

#define ROLE_CLIENT 1
#define ROLE_SERVER 2
#define DIR_SENT 1
#define DIR_RECEIVED 2

#define STAT_OUTPUT_FAILED 0 // ring buffer full (reserve/output failed)
#define STAT_UDP_FULL 1      // UDP aggregation map full: datagrams not counted
#define STAT_TCP_NEW 3       // TCP sockets tracked (sanity counter)
#define STAT_TCP_FULL 4      // TCP connection not tracked: its bucket of tcp_conns was full
#define NSTATS 8


#define bswap16(x) __builtin_bswap16(x)

// ---- records --------------------------------------------------------------------------------

// One record to user space (a reset or a drop). Laid out largest-first so there is no hidden
// padding; the loader decodes it with struct.Struct("<3Q3I2H5B3x16s16s16s").
struct event {
    u64 ts;
    u64 cgroup;
    u64 location;
    u32 netns;
    u32 pid;
    u32 reason;
    u16 lport;
    u16 rport;
    u8 type;
    u8 family;
    u8 direction;
    u8 ipproto;
    u8 have_ports;
    u8 _pad[3];
    u8 laddr[16];
    u8 raddr[16];
    char comm[16];
};

// One TCP connection, from SYN_SENT/SYN_RECV to CLOSE (two cache lines). User space reads
// the established ones (loader.py: struct.Struct("<7Q3I2H16s16s5B3x16s")), so the addresses
// are kept here, written before `established`; a closed one is copied to tcp_closed.
struct tcp_conn {
    u64 sk;
    u64 start_ns;
    u64 spare; // keeps the layout (was the established time: an open is timed at its start)
    u64 bytes_sent;
    u64 bytes_recv;
    u64 cgroup;
    u64 close_ns; // 0 while open
    u32 pid;
    u32 retrans;
    u32 netns;
    u16 lport;
    u16 rport;
    u8 laddr[16];
    u8 raddr[16];
    u8 role;
    u8 established;
    u8 reset;
    u8 have_proc;
    u8 family;
    u8 _pad[3];
    char comm[16];
};

struct udp_key {
    u64 sk;
    u32 netns;
    u16 lport;
    u16 rport;
    u8 family;
    u8 _pad[7];
    u8 raddr[16];
};

struct udp_val {
    u64 first_ns;
    u64 last_ns;
    u64 bytes_sent;
    u64 bytes_recv;
    u32 dgrams_sent;
    u32 dgrams_recv;
    u8 laddr[16];
};

struct owner {
    u64 cgroup;
    u32 pid;
    u32 _pad;
    char comm[16];
};

// The peer address the cgroup hook saw for the UDP call now running on this CPU, claimed by
// the sock_*_length tracepoint of the same call (same thread, same socket, same direction).
struct peer_stash {
    u64 sk;
    u32 tid;
    u16 port;
    u8 family;
    u8 sent;
    u8 addr[16];
};

struct pkt {
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
    u16 l4len;
    u8 family;
    u8 ipproto;
    u8 have_ports;
    u8 first_frag;
};

// ---- maps -----------------------------------------------------------------------------------

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RB_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_PERCPU_ARRAY(stats, u64, NSTATS); // per CPU: no shared cache line to bounce
BPF_PERCPU_ARRAY(rb_count, u64, 1);
// TCP connections: a set-associative table rather than a BPF hash map. A hash map insert and
// delete cost ~210 + ~130 ns here (bucket lock, element allocation), twice per connection;
// claiming a slot is one compare-and-swap. tcp_keys holds TCP_WAYS socket addresses per
// bucket (one cache line: a lookup reads one line); the connection itself is in tcp_conns at
// bucket * TCP_WAYS + way, an array user space maps read-only to find open connections. A
// connection whose bucket is full is not tracked, and counted (STAT_TCP_FULL). User space
// maps tcp_keys too: its sweep for open connections reads the keys (8 bytes per slot, where
// scanning the slots read two of each slot's cache lines) and then only the slots in use.
#define TCP_WAYS 8
#define TCP_BUCKETS (MAX_TCP / TCP_WAYS)
struct tcp_bucket {
    u64 sk[TCP_WAYS];
};
BPF_F_TABLE("array", u32, struct tcp_bucket, tcp_keys, TCP_BUCKETS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct tcp_conn, tcp_conns, MAX_TCP, BPF_F_MMAPABLE);
// Closed connections: CLOSED_PER_CPU slots per CPU (a power of two), used in turn, and the
// number each CPU has written (closed_written, one cache line per CPU). User space maps both
// and reads each CPU's slots up to its count; slots it did not read in time are overwritten,
// which it sees from the count (and counts as lost). One writer per CPU: the kernel does not
// run a program again on a CPU where it is running (it counts that as a miss instead).
struct closed_count {
    u64 written;
    u64 _pad[7];
};
BPF_F_TABLE("array", u32, struct tcp_conn, tcp_closed, NCPUS * CLOSED_PER_CPU, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct closed_count, closed_written, NCPUS, BPF_F_MMAPABLE);
BPF_HASH(udp_flows0, struct udp_key, struct udp_val, MAX_UDP);
BPF_HASH(udp_flows1, struct udp_key, struct udp_val, MAX_UDP);
BPF_ARRAY(udp_active, u32, 1);
BPF_TABLE("lru_hash", u64, struct owner, udp_owner, MAX_UDP);
BPF_PERCPU_ARRAY(peer_stash, struct peer_stash, 1);
BPF_ARRAY(drop_ignore, u8, DROP_REASON_SLOTS);

// ---- helpers --------------------------------------------------------------------------------

static __always_inline void stat_inc(u32 idx) {
    u64 *v = stats.lookup(&idx);
    if (v)
        *v += 1;
}

#ifdef USE_RINGBUF
// Waking the reader per record costs an irq_work (~1.5 us here, more than the rest of a
// probe): the reader polls on a timer and is woken only every RB_WAKEUP_EVERY (a power of
// two) records per CPU, well before the ring can fill.
static __always_inline u64 wakeup_flags(void) {
    u32 zero = 0;
    u64 *n = rb_count.lookup(&zero);
    if (n && (++*n & (RB_WAKEUP_EVERY - 1)) == 0)
        return BPF_RB_FORCE_WAKEUP;
    return BPF_RB_NO_WAKEUP;
}
#endif

static __always_inline void emit(void *ctx, struct event *ev) {
#ifdef USE_RINGBUF
    if (events.ringbuf_output(ev, sizeof(*ev), wakeup_flags()) != 0)
        stat_inc(STAT_OUTPUT_FAILED);
#else
    events.perf_submit(ctx, ev, sizeof(*ev));  // losses reach user space via the lost callback
#endif
}

static __always_inline u64 read_ptr(u64 addr) {
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

static __always_inline u32 net_inum(u64 net) {
    u32 inum = 0;
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (void *)(net + OFF_NET_INUM));
    return inum;
}

// Network namespace inode of a socket (any of sock/request_sock/inet_timewait_sock: they
// share struct sock_common, which holds skc_net).
static __always_inline u32 sk_netns(u64 sk) {
    return sk ? net_inum(read_ptr(sk + OFF_SKC_NET)) : 0;
}

// Namespace of a packet: its device's, else its socket's.
static __always_inline u32 skb_netns(u64 skb) {
    u64 dev = read_ptr(skb + OFF_SKB_DEV);
    if (dev)
        return net_inum(read_ptr(dev + OFF_DEV_NET));
    return sk_netns(read_ptr(skb + OFF_SKB_SK));
}

static __always_inline u32 sk_protocol(u64 sk) {
    u32 word = 0;
    bpf_probe_read_kernel(&word, sizeof(word), (void *)(sk + OFF_SK_PROTOCOL_WORD));
    return (word >> SK_PROTOCOL_SHIFT) & SK_PROTOCOL_MASK;
}

static __always_inline u16 sk_family(u64 sk) {
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (void *)(sk + OFF_SKC_FAMILY));
    return family;
}

// A socket's family, and its network namespace's address in *net: one read where the loader
// found both within SKC_FAMILY_NET_SPAN bytes of sock_common (every kernel so far). Each read
// is a helper call, and a helper call costs here about what a whole probe does otherwise.
static __always_inline u16 sk_family_net(u64 sk, u64 *net) {
#ifdef SKC_FAMILY_NET_SPAN
    u8 blk[SKC_FAMILY_NET_SPAN] = {};
    bpf_probe_read_kernel(blk, sizeof(blk), (void *)(sk + OFF_SKC_FAMILY));
    u16 family;
    __builtin_memcpy(&family, blk, 2);
    __builtin_memcpy(net, blk + (OFF_SKC_NET - OFF_SKC_FAMILY), 8);
    return family;
#else
    *net = read_ptr(sk + OFF_SKC_NET);
    return sk_family(sk);
#endif
}

static __always_inline void fill_proc(u32 *pid, u64 *cgroup, char *comm) {
    *pid = bpf_get_current_pid_tgid() >> 32;
    *cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(comm, 16);
}

// Parse IPv4/IPv6 and the TCP/UDP ports from skb->head + network header. `ethertype` is the
// skb's protocol in host order, or 0 to trust the IP version nibble.
static __always_inline int parse_skb(u64 skb, u16 ethertype, struct pkt *p) {
    u64 head = read_ptr(skb + OFF_SKB_HEAD);
    u16 nh = 0xffff;
    bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + OFF_SKB_NH));
    if (!head || nh == 0xffff)
        return 0;
    u64 l3 = head + nh, l4;
    u8 first = 0;
    bpf_probe_read_kernel(&first, 1, (void *)l3);
    u8 version = first >> 4;
    if ((ethertype == ETH_P_IP && version != 4) || (ethertype == ETH_P_IPV6 && version != 6))
        return 0;
    if (ethertype && ethertype != ETH_P_IP && ethertype != ETH_P_IPV6)
        return 0;
    u8 proto;
    if (version == 4) {
        u8 ip[20];
        if (bpf_probe_read_kernel(ip, sizeof(ip), (void *)l3))
            return 0;
        u32 ihl = (ip[0] & 0xf) * 4;
        if (ihl < 20)
            return 0;
        proto = ip[9];
        p->family = 4;
        __builtin_memcpy(p->saddr, &ip[12], 4);
        __builtin_memcpy(p->daddr, &ip[16], 4);
        p->first_frag = ((((u16)ip[6] << 8) | ip[7]) & 0x1fff) == 0;
        l4 = l3 + ihl;
    } else if (version == 6) {
        u8 ip6[40];
        if (bpf_probe_read_kernel(ip6, sizeof(ip6), (void *)l3))
            return 0;
        proto = ip6[6];
        p->family = 6;
        __builtin_memcpy(p->saddr, &ip6[8], 16);
        __builtin_memcpy(p->daddr, &ip6[24], 16);
        l4 = l3 + 40;
        p->first_frag = 1;
        // skip a few extension headers: hop-by-hop (0), routing (43), fragment (44),
        // destination options (60)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (proto != 0 && proto != 43 && proto != 44 && proto != 60)
                break;
            u8 eh[4];
            if (bpf_probe_read_kernel(eh, sizeof(eh), (void *)l4))
                return 0;
            if (proto == 44) {
                p->first_frag = ((((u16)eh[2] << 8) | eh[3]) & 0xfff8) == 0;
                l4 += 8;
            } else {
                l4 += ((u64)eh[1] + 1) * 8;
            }
            proto = eh[0];
        }
    } else {
        return 0;
    }
    p->ipproto = proto;
    if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP) && p->first_frag) {
        u16 l4h[4];
        if (bpf_probe_read_kernel(l4h, sizeof(l4h), (void *)l4) == 0) {
            p->sport = bswap16(l4h[0]);
            p->dport = bswap16(l4h[1]);
            p->l4len = bswap16(l4h[2]); // UDP length (meaningless for TCP)
            p->have_ports = 1;
        }
    }
    return 1;
}

// ---- TCP connection table -------------------------------------------------------------------

static __always_inline u32 tcp_bucket_of(u64 sk) {
    // socket addresses are slab-aligned: a multiplicative hash spreads their low bits
    return (u32)((sk * 0x9E3779B97F4A7C15ULL) >> 32) & (TCP_BUCKETS - 1);
}

static __always_inline struct tcp_conn *tcp_slot(u32 bucket, u32 way) {
    u32 idx = bucket * TCP_WAYS + way;
    return tcp_conns.lookup(&idx);
}

// The connection of socket `sk`, or NULL when we do not track it.
static __always_inline struct tcp_conn *tcp_find(u64 sk) {
    u32 bucket = tcp_bucket_of(sk);
    struct tcp_bucket *b = tcp_keys.lookup(&bucket);
    if (!b)
        return NULL;
#pragma unroll
    for (u32 way = 0; way < TCP_WAYS; way++) {
        if (b->sk[way] == sk)
            return tcp_slot(bucket, way);
    }
    return NULL;
}

// A slot for new socket `sk` (its previous entry if the address is still there: a socket freed
// while we missed its close, whose memory was reused), cleared but for `sk`; NULL if full.
static __always_inline struct tcp_conn *tcp_claim(u64 sk) {
    u32 bucket = tcp_bucket_of(sk);
    struct tcp_bucket *b = tcp_keys.lookup(&bucket);
    if (!b)
        return NULL;
    struct tcp_conn *c = NULL;
#pragma unroll
    for (u32 way = 0; way < TCP_WAYS; way++) {
        if (!c && (b->sk[way] == sk ||
                   (b->sk[way] == 0 && __sync_val_compare_and_swap(&b->sk[way], 0, sk) == 0)))
            c = tcp_slot(bucket, way);
    }
    if (!c) {
        stat_inc(STAT_TCP_FULL);
        return NULL;
    }
    __builtin_memset(c, 0, sizeof(*c));
    c->sk = sk;
    return c;
}

// Free the slot of `sk`.
static __always_inline void tcp_release(u64 sk, struct tcp_conn *c) {
    c->established = 0;
    c->sk = 0;
    u32 bucket = tcp_bucket_of(sk);
    struct tcp_bucket *b = tcp_keys.lookup(&bucket);
    if (!b)
        return;
#pragma unroll
    for (u32 way = 0; way < TCP_WAYS; way++) {
        if (b->sk[way] == sk)
            b->sk[way] = 0;
    }
}

// Copy a closed connection to this CPU's next tcp_closed slot, then count it: the count,
// written after the copy is visible, publishes it to user space. One writer per CPU (see
// tcp_closed), so the count needs no atomic read-modify-write, only ordering.
static __always_inline void tcp_closed_push(struct tcp_conn *c) {
    u32 cpu = bpf_get_smp_processor_id();
    struct closed_count *n = closed_written.lookup(&cpu);
    if (!n)
        return;
    u64 written = n->written;
    u32 idx = cpu * CLOSED_PER_CPU + ((u32)written & (CLOSED_PER_CPU - 1));
    struct tcp_conn *dst = tcp_closed.lookup(&idx);
    if (!dst)
        return;
    __builtin_memcpy(dst, c, sizeof(*c));
#ifdef TSO_STORES
    // x86: stores become visible in program order, so a plain store after a compiler barrier
    // publishes the copy. A locked add (below) would also wait for the copy's stores, to lines
    // user space last read from another core: a third of this program's time, measured.
    asm volatile("" ::: "memory");
    n->written = written + 1;
#else
    // the add's result is used, so clang emits a fetching atomic, which every JIT makes fully
    // ordered (a plain atomic add is not ordered on arm64): the copy is visible before the count
    if (__sync_fetch_and_add(&n->written, 1) == ~0ULL)
        stat_inc(STAT_OUTPUT_FAILED); // never true
#endif
}

// ---- TCP lifecycle: sock:inet_sock_set_state (raw) --------------------------------------

// The socket's own and peer addresses and ports (sock_common; ports in host order). IPv4
// takes one read: the loader checks that skc_daddr, skc_rcv_saddr, skc_dport and skc_num lie
// within SKC_V4_SPAN bytes from skc_daddr (they are adjacent in every kernel so far).
static __always_inline void sk_addrs(u64 sk, u8 family, u8 *laddr, u8 *raddr, u16 *lport,
                                     u16 *rport) {
    u8 blk[SKC_V4_SPAN];
    bpf_probe_read_kernel(blk, sizeof(blk), (void *)(sk + OFF_SKC_DADDR));
    u16 dport;
    __builtin_memcpy(&dport, blk + (OFF_SKC_DPORT - OFF_SKC_DADDR), 2);
    __builtin_memcpy(lport, blk + (OFF_SKC_NUM - OFF_SKC_DADDR), 2);
    *rport = bswap16(dport);
    if (family == 4) {
        __builtin_memcpy(raddr, blk, 4);
        __builtin_memcpy(laddr, blk + (OFF_SKC_RCV_SADDR - OFF_SKC_DADDR), 4);
    } else {
#if OFF_SKC_V6_RCV_SADDR == OFF_SKC_V6_DADDR + 16
        u8 v6[32];
        bpf_probe_read_kernel(v6, sizeof(v6), (void *)(sk + OFF_SKC_V6_DADDR));
        __builtin_memcpy(raddr, v6, 16);
        __builtin_memcpy(laddr, v6 + 16, 16);
#else
        bpf_probe_read_kernel(raddr, 16, (void *)(sk + OFF_SKC_V6_DADDR));
        bpf_probe_read_kernel(laddr, 16, (void *)(sk + OFF_SKC_V6_RCV_SADDR));
#endif
    }
}

// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate). Called at the top
// of tcp_set_state(), before a closing socket is unhashed, so its addresses are still there.
int on_set_state(struct bpf_raw_tracepoint_args *ctx) {
    u64 sk = ctx->args[0];
    int os = (int)ctx->args[1];
    int ns = (int)ctx->args[2];

    if (ns == TCP_SYN_SENT || ns == TCP_SYN_RECV) {
        if (ns == TCP_SYN_RECV && os == TCP_SYN_SENT)
            return 0; // simultaneous open: keep the client entry
        u64 net;
        u16 family = sk_family_net(sk, &net);
        if ((family != AF_INET && family != AF_INET6) || sk_protocol(sk) != IPPROTO_TCP)
            return 0;
        struct tcp_conn *c = tcp_claim(sk);
        if (!c)
            return 0;
        c->start_ns = bpf_ktime_get_ns();
        c->netns = net_inum(net);
        c->family = family == AF_INET ? 4 : 6;
        if (ns == TCP_SYN_SENT) {
            // connect(): process context, the connecting process
            c->role = ROLE_CLIENT;
            fill_proc(&c->pid, &c->cgroup, c->comm);
            c->have_proc = 1;
        } else {
            // a passive child, created in softirq: its process is known at first send/recv
            c->role = ROLE_SERVER;
        }
        stat_inc(STAT_TCP_NEW);
        return 0;
    }
    if (ns == TCP_ESTABLISHED) {
        // only TCP sockets are in the table: no protocol check needed from here on
        struct tcp_conn *c = tcp_find(sk);
        if (!c || c->established)
            return 0; // opened before we started (role unknown): not reported
        sk_addrs(sk, c->family, c->laddr, c->raddr, &c->lport, &c->rport);
        // no clock read: the open is timed at start_ns (the SYN, or the passive child's
        // creation), as Hubble times the SYN flow; a clock read costs a fifth of all the
        // probes do for a connection on some machines (a VM's rdtsc, fenced)
        c->established = 1; // last: user space reads entries with this set
        return 0;
    }
    if (ns == TCP_FIN_WAIT1 || ns == TCP_LAST_ACK) {
        // close()/shutdown() by the owning process: its identity, if no send/recv told us
        struct tcp_conn *c = tcp_find(sk);
        if (c && !c->have_proc) {
            fill_proc(&c->pid, &c->cgroup, c->comm);
            c->have_proc = 1;
        }
        return 0;
    }
    if (ns != TCP_CLOSE)
        return 0;
    // closed: what is not in the slot yet goes there, then the slot goes to user space
    struct tcp_conn *c = tcp_find(sk);
    if (!c)
        return 0;
    if (!c->established) { // refused or timed out: the addresses it tried; its port was
        // released before this CLOSE (inet_put_port zeroes skc_num), inet_sport still has it
        sk_addrs(sk, c->family, c->laddr, c->raddr, &c->lport, &c->rport);
        u16 sport = 0;
        bpf_probe_read_kernel(&sport, sizeof(sport), (void *)(sk + OFF_INET_SPORT));
        c->lport = bswap16(sport);
    }
#ifdef TCP_BYTES_FROM_BTF
    // no sock_*_length tracepoints: the kernel's own per-socket totals
    bpf_probe_read_kernel(&c->bytes_sent, 8, (void *)(sk + OFF_TCP_BYTES_ACKED));
    bpf_probe_read_kernel(&c->bytes_recv, 8, (void *)(sk + OFF_TCP_BYTES_RECEIVED));
#endif
    c->close_ns = bpf_ktime_get_ns();
    tcp_closed_push(c);
    tcp_release(sk, c);
    return 0;
}

// tcp:tcp_retransmit_skb
int on_tcp_retransmit_skb(struct tp_tcp_retransmit_skb *args) {
    u64 sk = args->skaddr;
    struct tcp_conn *c = tcp_find(sk);
    if (c)
        __sync_fetch_and_add(&c->retrans, 1);
    return 0;
}

// ---- UDP aggregation ------------------------------------------------------------------------

static __always_inline struct udp_val *udp_lookup(u32 which, struct udp_key *k) {
    return which ? udp_flows1.lookup(k) : udp_flows0.lookup(k);
}

static __always_inline void udp_account(struct udp_key *k, const u8 *laddr, u32 bytes,
                                        int sent) {
    u32 zero = 0;
    u32 *act = udp_active.lookup(&zero);
    u32 which = act ? *act : 0;
    u64 now = bpf_ktime_get_ns();
    struct udp_val *v = udp_lookup(which, k);
    if (!v) {
        struct udp_val n = {};
        n.first_ns = now;
        __builtin_memcpy(n.laddr, laddr, 16);
        if (which) // BPF_NOEXIST: a concurrent insert on another CPU wins, we then add to it
            udp_flows1.insert(k, &n);
        else
            udp_flows0.insert(k, &n);
        v = udp_lookup(which, k);
        if (!v) {
            stat_inc(STAT_UDP_FULL);
            return;
        }
    }
    if (sent) {
        __sync_fetch_and_add(&v->bytes_sent, bytes);
        __sync_fetch_and_add(&v->dgrams_sent, 1);
    } else {
        __sync_fetch_and_add(&v->bytes_recv, bytes);
        __sync_fetch_and_add(&v->dgrams_recv, 1);
    }
    v->last_ns = now;
}

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is IPv4: keys must agree between v4 and
// dual-stack sockets.
static __always_inline int is_v4mapped(const u8 *a) {
    u64 hi = 0;
    u32 mid = 0;
    __builtin_memcpy(&hi, a, 8);
    __builtin_memcpy(&mid, a + 8, 4);
    return hi == 0 && mid == 0xffff0000;
}

static __always_inline void unmap_v4(u8 *a) {
    __builtin_memcpy(a, a + 12, 4);
    __builtin_memset(a + 4, 0, 12);
}

static __always_inline void remember_owner(u64 sk) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct owner *o = udp_owner.lookup(&sk);
    if (o && o->pid == pid)
        return;
    struct owner n = {};
    fill_proc(&n.pid, &n.cgroup, n.comm);
    udp_owner.update(&sk, &n);
}

// A datagram sent or received by `sk`: the peer is the one the cgroup hook saw for this very
// call (an address given to sendto/sendmsg, or the sender handed back to recvfrom/recvmsg),
// else the socket's connected peer (zeros for an unconnected socket nobody told us about).
static __always_inline void udp_datagram(u64 sk, u32 bytes, int sent) {
    struct udp_key k;
    __builtin_memset(&k, 0, sizeof(k));
    u8 laddr[16] = {};
    k.sk = sk;
    k.netns = sk_netns(sk);
    u16 skfam = sk_family(sk);
    u16 rport = 0;
    sk_addrs(sk, skfam == AF_INET ? 4 : 6, laddr, k.raddr, &k.lport, &rport);
    k.rport = rport;
    k.family = skfam == AF_INET ? 4 : 6;
#ifdef HAVE_SOCK_ADDR_HOOKS
    u32 zero = 0;
    struct peer_stash *st = peer_stash.lookup(&zero);
    if (st && st->sk == sk && st->tid == (u32)bpf_get_current_pid_tgid() && st->sent == sent) {
        k.family = st->family;
        __builtin_memcpy(k.raddr, st->addr, 16);
        k.rport = st->port;
        st->sk = 0; // used
    }
#endif
    if (k.family == 6 && is_v4mapped(k.raddr)) {
        k.family = 4;
        unmap_v4(k.raddr);
    }
    if (k.family == 4 && skfam == AF_INET6) { // dual-stack socket: its address is v4-mapped
        if (is_v4mapped(laddr))
            unmap_v4(laddr);
        else
            __builtin_memset(laddr, 0, 16);
    }
    udp_account(&k, laddr, bytes, sent);
}

// ---- UDP peers: cgroup sock_addr hooks (cgroup/sendmsg4/6, cgroup/recvmsg4/6) ----------------
// Attached to the root of the cgroup v2 hierarchy (so they run for every process) through a
// bpf_link, which detaches them when the agent exits, however it exits. They run only for
// UDP sendmsg calls that carry an address and UDP recvmsg calls that ask for one, so TCP
// traffic never pays for them. They only read: they always return 1 (let the call proceed).

#ifdef HAVE_SOCK_ADDR_HOOKS
static __always_inline int stash_peer(struct bpf_sock_addr *ctx, int v6, int sent) {
    u32 zero = 0;
    struct peer_stash *st = peer_stash.lookup(&zero);
    if (!st)
        return 1;
    u64 sk = (u64)ctx->sk;
    st->sk = sk;
    st->tid = (u32)bpf_get_current_pid_tgid();
    st->sent = sent;
    st->port = bswap16((u16)ctx->user_port);
    if (v6) {
        u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2],
            a3 = ctx->user_ip6[3];
        st->family = 6;
        __builtin_memcpy(st->addr, &a0, 4);
        __builtin_memcpy(st->addr + 4, &a1, 4);
        __builtin_memcpy(st->addr + 8, &a2, 4);
        __builtin_memcpy(st->addr + 12, &a3, 4);
    } else {
        u32 a = ctx->user_ip4;
        st->family = 4;
        __builtin_memset(st->addr, 0, 16);
        __builtin_memcpy(st->addr, &a, 4);
    }
    return 1;
}

int on_udp4_sendmsg(struct bpf_sock_addr *ctx) { return stash_peer(ctx, 0, 1); }
int on_udp6_sendmsg(struct bpf_sock_addr *ctx) { return stash_peer(ctx, 1, 1); }
int on_udp4_recvmsg(struct bpf_sock_addr *ctx) { return stash_peer(ctx, 0, 0); }
int on_udp6_recvmsg(struct bpf_sock_addr *ctx) { return stash_peer(ctx, 1, 0); }
#endif

// ---- bytes per socket: sock:sock_send_length / sock:sock_recv_length -----------------------

#ifdef HAVE_SOCK_LENGTH
static __always_inline void tcp_bytes(struct tcp_conn *c, int ret, int sent) {
    if (ret > 0) {
        if (sent)
            __sync_fetch_and_add(&c->bytes_sent, (u64)ret);
        else
            __sync_fetch_and_add(&c->bytes_recv, (u64)ret);
    }
    if (!c->have_proc) { // the accepting process of a passive socket
        fill_proc(&c->pid, &c->cgroup, c->comm);
        c->have_proc = 1;
    }
}

// Raw: TP_PROTO(struct sock *sk, int ret, int flags), for every socket family. A TCP socket
// we track is found by the map lookup alone; anything else pays two reads to be told apart.
static __always_inline int inet_protocol(u64 sk) {
    u16 family = sk_family(sk);
    if (family != AF_INET && family != AF_INET6)
        return 0;
    return sk_protocol(sk);
}

static __always_inline int sock_length(struct bpf_raw_tracepoint_args *ctx, int sent) {
    u64 sk = ctx->args[0];
    int ret = (int)ctx->args[1];
    // errors, peeks and the error queue (ICMP errors, timestamps) are not data
    if (ret < 0 || ((int)ctx->args[2] & (sent ? MSG_PEEK : (MSG_PEEK | MSG_ERRQUEUE))))
        return 0;
    struct tcp_conn *c = tcp_find(sk);
    if (c) {
        tcp_bytes(c, ret, sent);
        return 0;
    }
    if (inet_protocol(sk) != IPPROTO_UDP)
        return 0;
    remember_owner(sk);
    udp_datagram(sk, ret, sent);
    return 0;
}

int on_sock_send_length(struct bpf_raw_tracepoint_args *ctx) { return sock_length(ctx, 1); }
int on_sock_recv_length(struct bpf_raw_tracepoint_args *ctx) { return sock_length(ctx, 0); }
#endif // HAVE_SOCK_LENGTH

// ---- resets: tcp:tcp_send_reset, tcp:tcp_receive_reset -------------------------------------

static __always_inline void reset_conn(u64 sk, struct event *ev) {
    if (!sk)
        return;
    struct tcp_conn *c = tcp_find(sk);
    if (!c)
        return;
    c->reset = 1;
    if (c->have_proc) {
        ev->pid = c->pid;
        ev->cgroup = c->cgroup;
        __builtin_memcpy(ev->comm, c->comm, 16);
    }
}

int on_tcp_receive_reset(struct tp_tcp_receive_reset *args) {
    u64 sk = args->skaddr;
    struct event ev = {};
    ev.type = EV_RESET;
    ev.ts = bpf_ktime_get_ns();
    ev.direction = DIR_RECEIVED;
    ev.ipproto = IPPROTO_TCP;
    ev.have_ports = 1;
    ev.lport = args->sport;
    ev.rport = args->dport;
    if (args->family == AF_INET) {
        ev.family = 4;
        bpf_probe_read_kernel(ev.laddr, 4, args->saddr);
        bpf_probe_read_kernel(ev.raddr, 4, args->daddr);
    } else {
        ev.family = 6;
        bpf_probe_read_kernel(ev.laddr, 16, args->saddr_v6);
        bpf_probe_read_kernel(ev.raddr, 16, args->daddr_v6);
    }
    ev.netns = sk_netns(sk);
    reset_conn(sk, &ev);
    emit(args, &ev);
    return 0;
}

#ifdef SEND_RESET_SOCKADDR
// Linux >= 6.10: saddr/daddr are sockaddr_in/in6 (28 bytes); skaddr may be NULL (a reset
// answering a packet that matched no socket), then the addresses come from that packet.
static __always_inline void sockaddr_to(const u8 *sa, u8 *fam, u8 *addr, u16 *port) {
    u16 af;
    __builtin_memcpy(&af, sa, 2); // sa_family: host order
    *port = ((u16)sa[2] << 8) | sa[3];
    if (af == AF_INET) {
        *fam = 4;
        __builtin_memcpy(addr, sa + 4, 4);
    } else if (af == AF_INET6) {
        *fam = 6;
        __builtin_memcpy(addr, sa + 8, 16);
    }
}
#endif

int on_tcp_send_reset(struct tp_tcp_send_reset *args) {
    u64 sk = args->skaddr;
    u64 skb = args->skbaddr;
    struct event ev = {};
    ev.type = EV_RESET;
    ev.ts = bpf_ktime_get_ns();
    ev.direction = DIR_SENT;
    ev.ipproto = IPPROTO_TCP;
    ev.have_ports = 1;
#ifdef SEND_RESET_SOCKADDR
    u8 sa[28];
    u8 fam = 0;
    bpf_probe_read_kernel(sa, sizeof(sa), args->saddr);
    sockaddr_to(sa, &ev.family, ev.laddr, &ev.lport);
    bpf_probe_read_kernel(sa, sizeof(sa), args->daddr);
    sockaddr_to(sa, &fam, ev.raddr, &ev.rport);
#else
    ev.lport = args->sport;
    ev.rport = args->dport;
    if (args->family == AF_INET) {
        ev.family = 4;
        bpf_probe_read_kernel(ev.laddr, 4, args->saddr);
        bpf_probe_read_kernel(ev.raddr, 4, args->daddr);
    } else {
        ev.family = 6;
        bpf_probe_read_kernel(ev.laddr, 16, args->saddr_v6);
        bpf_probe_read_kernel(ev.raddr, 16, args->daddr_v6);
    }
#endif
    ev.netns = sk ? sk_netns(sk) : (skb ? skb_netns(skb) : 0);
    reset_conn(sk, &ev);
    emit(args, &ev);
    return 0;
}

// ---- drops: skb:kfree_skb -------------------------------------------------------------------
// Raw where the kernel's btf_trace_kfree_skb has the expected arguments (skb, location, reason
// and, from Linux 6.11, rx_sk): it fires on every freed packet with a reason, one per actively
// closed connection at least (QUEUE_PURGE), and a classic tracepoint first formats a record
// (~100 ns here) that a raw one does not. Otherwise the classic tracepoint, from its format.

static __always_inline int kfree_skb(void *ctx, u64 skb, u64 location, u32 reason, int raw,
                                     u16 protocol, u64 rx_sk) {
    if (reason < DROP_REASON_SLOTS) {
        u8 *ign = drop_ignore.lookup(&reason);
        if (ign && *ign)
            return 0; // consumed (not a drop), or NOT_SPECIFIED unless asked for
    }
#ifdef OFF_SKB_PROTOCOL
    if (raw) { // skb->protocol, big-endian (the classic tracepoint gives it in host order)
        bpf_probe_read_kernel(&protocol, sizeof(protocol), (void *)(skb + OFF_SKB_PROTOCOL));
        protocol = bswap16(protocol);
    }
#endif
    struct event ev = {};
    ev.type = EV_DROP;
    ev.ts = bpf_ktime_get_ns();
    ev.reason = reason;
    ev.location = location;
    struct pkt p = {};
    if (parse_skb(skb, protocol, &p)) {
        ev.family = p.family;
        ev.ipproto = p.ipproto;
        ev.have_ports = p.have_ports;
        __builtin_memcpy(ev.laddr, p.saddr, 16);
        __builtin_memcpy(ev.raddr, p.daddr, 16);
        ev.lport = p.sport;
        ev.rport = p.dport;
    }
    ev.netns = skb_netns(skb);
    if (!ev.netns && rx_sk)
        ev.netns = sk_netns(rx_sk);
    emit(ctx, &ev);
    return 0;
}

#ifdef KFREE_SKB_RAW
// TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason[, struct sock *rx_sk])
int on_kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx) {
#ifdef HAVE_KFREE_RX_SK
    u64 rx_sk = ctx->args[3];
#else
    u64 rx_sk = 0;
#endif
    return kfree_skb(ctx, ctx->args[0], ctx->args[1], (u32)ctx->args[2], 1, 0, rx_sk);
}
#else
int on_kfree_skb(struct tp_kfree_skb *args) {
#ifdef HAVE_KFREE_RX_SK
    u64 rx_sk = args->rx_sk;
#else
    u64 rx_sk = 0;
#endif
    return kfree_skb(args, args->skbaddr, args->location, args->reason, 0, args->protocol,
                     rx_sk);
}
#endif
