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
// * Per-event work is small and nothing is sent to user space per packet: TCP produces one
//   record when a connection is established and one when it closes; UDP is aggregated in a
//   hash map that user space drains; drops and resets are one record each.
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

#define EV_OPEN 1
#define EV_CLOSE 2
#define EV_RESET 3
#define EV_DROP 4

#define ROLE_CLIENT 1
#define ROLE_SERVER 2
#define DIR_SENT 1
#define DIR_RECEIVED 2

#define STAT_OUTPUT_FAILED 0 // ring buffer full (reserve/output failed)
#define STAT_UDP_FULL 1      // UDP aggregation map full: datagrams not counted
#define STAT_RX_STASH_FULL 2 // recvmmsg batch larger than RX_BATCH: peer unknown for the rest
#define STAT_TCP_NEW 3       // TCP sockets tracked (sanity counter)
#define NSTATS 8

#define LADDR_NONE 0
#define LADDR_SOCKET 1
#define LADDR_PACKET 2

#define RX_BATCH 8
#define RX_FROM 1
#define RX_MSG 2
#define RX_MMSG 3

#define bswap16(x) __builtin_bswap16(x)

// ---- records --------------------------------------------------------------------------------

// One record to user space. Laid out largest-first so there is no hidden padding; the
// loader decodes it with struct.Struct("<6Q4I2H8B16s16s16s4x").
struct event {
    u64 ts;
    u64 cgroup;
    u64 duration;
    u64 bytes_sent;
    u64 bytes_recv;
    u64 location;
    u32 netns;
    u32 pid;
    u32 retrans;
    u32 reason;
    u16 lport;
    u16 rport;
    u8 type;
    u8 family;
    u8 role;
    u8 established;
    u8 reset;
    u8 direction;
    u8 ipproto;
    u8 have_ports;
    u8 laddr[16];
    u8 raddr[16];
    char comm[16];
    u32 _pad;
};

struct tcp_conn {
    u64 start_ns;
    u64 bytes_sent;
    u64 bytes_recv;
    u64 cgroup;
    u32 pid;
    u32 retrans;
    u32 netns;
    u8 role;
    u8 established;
    u8 reset;
    u8 have_proc;
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
    u8 laddr_src;
    u8 _pad[7];
};

struct owner {
    u64 cgroup;
    u32 pid;
    u32 _pad;
    char comm[16];
};

struct rx_stash {
    u64 uaddr;  // user sockaddr (recvfrom/recvmsg) or mmsghdr array (recvmmsg)
    u64 sk;
    u32 len[RX_BATCH];
    u32 n;
    u32 kind;
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
BPF_ARRAY(stats, u64, NSTATS);
BPF_PERCPU_ARRAY(rb_count, u64, 1);
BPF_TABLE("lru_hash", u64, struct tcp_conn, tcp_conns, MAX_TCP);
BPF_HASH(udp_flows0, struct udp_key, struct udp_val, MAX_UDP);
BPF_HASH(udp_flows1, struct udp_key, struct udp_val, MAX_UDP);
BPF_ARRAY(udp_active, u32, 1);
BPF_TABLE("lru_hash", u64, struct owner, udp_owner, MAX_UDP);
BPF_TABLE("lru_hash", u32, struct rx_stash, rx_stash, 4096);
BPF_ARRAY(drop_ignore, u8, DROP_REASON_SLOTS);
struct stacked {
    u64 skb;
    u64 ts;
};
BPF_PERCPU_ARRAY(stacked_seen, struct stacked, 1); // last UDP skb counted on an upper device
#define STACKED_WINDOW_NS 100000

// ---- helpers --------------------------------------------------------------------------------

static __always_inline void stat_inc(u32 idx) {
    u64 *v = stats.lookup(&idx);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void emit(void *ctx, struct event *ev) {
#ifdef USE_RINGBUF
    // Waking the reader per record costs an irq_work (~1.5 us here, more than the rest of a
    // probe): the reader polls on a timer and is woken only every RB_WAKEUP_EVERY records
    // per CPU, well before the ring can fill.
    u32 zero = 0;
    u64 flags = BPF_RB_NO_WAKEUP;
    u64 *n = rb_count.lookup(&zero);
    if (n && ++*n % RB_WAKEUP_EVERY == 0)
        flags = BPF_RB_FORCE_WAKEUP;
    if (events.ringbuf_output(ev, sizeof(*ev), flags) != 0)
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

// ---- TCP lifecycle: sock:inet_sock_set_state ------------------------------------------------

// The reset tracepoints below repeat these lines on purpose: bcc rewrites `args->` reads per
// program, and a helper or macro shared between tracepoint argument types does not compile.
static __always_inline void copy_tp_addrs(struct event *ev, u16 family,
                                          struct tp_inet_sock_set_state *args) {
    if (family == AF_INET) {
        ev->family = 4;
        bpf_probe_read_kernel(ev->laddr, 4, args->saddr);
        bpf_probe_read_kernel(ev->raddr, 4, args->daddr);
    } else {
        ev->family = 6;
        bpf_probe_read_kernel(ev->laddr, 16, args->saddr_v6);
        bpf_probe_read_kernel(ev->raddr, 16, args->daddr_v6);
    }
}

int on_inet_sock_set_state(struct tp_inet_sock_set_state *args) {
    if (args->protocol != IPPROTO_TCP)
        return 0;
    u64 sk = args->skaddr;
    int ns = args->newstate;
    int os = args->oldstate;
    u16 family = args->family;
    if (family != AF_INET && family != AF_INET6)
        return 0;

    if (ns == TCP_SYN_SENT || ns == TCP_SYN_RECV) {
        if (ns == TCP_SYN_RECV && os == TCP_SYN_SENT)
            return 0; // simultaneous open: keep the client entry
        struct tcp_conn c = {};
        c.start_ns = bpf_ktime_get_ns();
        c.netns = sk_netns(sk);
        if (ns == TCP_SYN_SENT) {
            // connect(): process context, the connecting process
            c.role = ROLE_CLIENT;
            fill_proc(&c.pid, &c.cgroup, c.comm);
            c.have_proc = 1;
        } else {
            // a passive child, created in softirq: its process is known at first send/recv
            c.role = ROLE_SERVER;
        }
        tcp_conns.update(&sk, &c);
        stat_inc(STAT_TCP_NEW);
        return 0;
    }
    if (ns == TCP_FIN_WAIT1 || ns == TCP_LAST_ACK) {
        // close()/shutdown() by the owning process: its identity, if no send/recv told us
        struct tcp_conn *c = tcp_conns.lookup(&sk);
        if (c && !c->have_proc) {
            fill_proc(&c->pid, &c->cgroup, c->comm);
            c->have_proc = 1;
        }
        return 0;
    }
    if (ns != TCP_ESTABLISHED && ns != TCP_CLOSE)
        return 0;
    struct tcp_conn *c = tcp_conns.lookup(&sk);
    if (!c)
        return 0; // opened before we started (role unknown): not reported
    struct event ev = {};
    ev.ts = bpf_ktime_get_ns();
    ev.netns = c->netns;
    ev.role = c->role;
    ev.lport = args->sport;
    ev.rport = args->dport;
    ev.ipproto = IPPROTO_TCP;
    ev.have_ports = 1;
    copy_tp_addrs(&ev, family, args);
    if (c->have_proc) {
        ev.pid = c->pid;
        ev.cgroup = c->cgroup;
        __builtin_memcpy(ev.comm, c->comm, 16);
    }
    if (ns == TCP_ESTABLISHED) {
        if (c->established)
            return 0;
        c->established = 1;
        ev.type = EV_OPEN;
        ev.established = 1;
        emit(args, &ev);
        return 0;
    }
    // TCP_CLOSE
    ev.type = EV_CLOSE;
    ev.established = c->established;
    ev.reset = c->reset;
    ev.retrans = c->retrans;
    ev.duration = ev.ts - c->start_ns;
#ifdef TCP_BYTES_FROM_BTF
    // no sock_*_length tracepoints: the kernel's own per-socket totals
    bpf_probe_read_kernel(&ev.bytes_sent, 8, (void *)(sk + OFF_TCP_BYTES_ACKED));
    bpf_probe_read_kernel(&ev.bytes_recv, 8, (void *)(sk + OFF_TCP_BYTES_RECEIVED));
#else
    ev.bytes_sent = c->bytes_sent;
    ev.bytes_recv = c->bytes_recv;
#endif
    tcp_conns.delete(&sk);
    emit(args, &ev);
    return 0;
}

// tcp:tcp_retransmit_skb
int on_tcp_retransmit_skb(struct tp_tcp_retransmit_skb *args) {
    u64 sk = args->skaddr;
    struct tcp_conn *c = tcp_conns.lookup(&sk);
    if (c)
        __sync_fetch_and_add(&c->retrans, 1);
    return 0;
}

// ---- UDP aggregation ------------------------------------------------------------------------

static __always_inline struct udp_val *udp_lookup(u32 which, struct udp_key *k) {
    return which ? udp_flows1.lookup(k) : udp_flows0.lookup(k);
}

static __always_inline void udp_account(struct udp_key *k, const u8 *laddr, u8 laddr_src,
                                        u32 bytes, int sent) {
    u32 zero = 0;
    u32 *act = udp_active.lookup(&zero);
    u32 which = act ? *act : 0;
    u64 now = bpf_ktime_get_ns();
    struct udp_val *v = udp_lookup(which, k);
    if (!v) {
        struct udp_val n = {};
        n.first_ns = now;
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
    if (laddr_src > v->laddr_src) {
        __builtin_memcpy(v->laddr, laddr, 16);
        v->laddr_src = laddr_src;
    }
}

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is IPv4: keys must agree with IPv4 packets.
static __always_inline int is_v4mapped(const u8 *a) {
    u64 hi = 0;
    u32 mid = 0;
    __builtin_memcpy(&hi, a, 8);
    __builtin_memcpy(&mid, a + 8, 4);
    return hi == 0 && mid == 0xffff0000;
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

// A datagram received on `sk` from `peer` (family 4/6 with address and port), or, when
// peer_family is 0, from the socket's connected peer (unknown = zeros for an unconnected one).
static __always_inline void udp_rx(u64 sk, u32 bytes, u8 peer_family, const u8 *peer,
                                   u16 peer_port) {
    struct udp_key k;
    __builtin_memset(&k, 0, sizeof(k));
    u8 laddr[16] = {};
    k.sk = sk;
    k.netns = sk_netns(sk);
    bpf_probe_read_kernel(&k.lport, 2, (void *)(sk + OFF_SKC_NUM));
    u16 skfam = 0;
    bpf_probe_read_kernel(&skfam, 2, (void *)(sk + OFF_SKC_FAMILY));
    if (skfam == AF_INET) {
        k.family = 4;
        bpf_probe_read_kernel(laddr, 4, (void *)(sk + OFF_SKC_RCV_SADDR));
    } else {
        k.family = 6;
        bpf_probe_read_kernel(laddr, 16, (void *)(sk + OFF_SKC_V6_RCV_SADDR));
    }
    if (peer_family) {
        k.family = peer_family;
        __builtin_memcpy(k.raddr, peer, 16);
        k.rport = peer_port;
    } else {
        u16 dport = 0;
        bpf_probe_read_kernel(&dport, 2, (void *)(sk + OFF_SKC_DPORT));
        k.rport = bswap16(dport);
        if (skfam == AF_INET)
            bpf_probe_read_kernel(k.raddr, 4, (void *)(sk + OFF_SKC_DADDR));
        else
            bpf_probe_read_kernel(k.raddr, 16, (void *)(sk + OFF_SKC_V6_DADDR));
    }
    if (k.family == 6 && is_v4mapped(k.raddr)) {
        k.family = 4;
        __builtin_memcpy(k.raddr, k.raddr + 12, 4);
        __builtin_memset(k.raddr + 4, 0, 12);
    }
    if (k.family == 4 && skfam == AF_INET6) { // dual-stack socket: its address is v4-mapped
        if (is_v4mapped(laddr)) {
            __builtin_memcpy(laddr, laddr + 12, 4);
            __builtin_memset(laddr + 4, 0, 12);
        } else {
            __builtin_memset(laddr, 0, 16);
        }
    }
    u64 any = 0, any2 = 0;
    __builtin_memcpy(&any, laddr, 8);
    __builtin_memcpy(&any2, laddr + 8, 8);
    udp_account(&k, laddr, (any | any2) ? LADDR_SOCKET : LADDR_NONE, bytes, 0);
}

// UDP sends, per packet as it is queued to a device: the exact 5-tuple (routing has chosen
// the source address even for an unbound, unconnected socket), in the sender's context.
RAW_TRACEPOINT_PROBE(net_dev_queue) {
    u64 skb = ctx->args[0];
    u64 sk = read_ptr(skb + OFF_SKB_SK);
    if (!sk || sk_protocol(sk) != IPPROTO_UDP)
        return 0;
    struct pkt p = {};
    if (!parse_skb(skb, 0, &p) || p.ipproto != IPPROTO_UDP || !p.have_ports || !p.first_frag)
        return 0;
    // An encapsulating tunnel keeps the inner socket on its outer packet: only the socket's
    // own datagrams (source port = its port) are its traffic.
    u16 num = 0;
    bpf_probe_read_kernel(&num, 2, (void *)(sk + OFF_SKC_NUM));
    if (num != p.sport)
        return 0;
    // A stacked device (vlan, bond, macvlan, bridge, vxlan ...: one with lower devices)
    // queues the same skb again on a lower device, synchronously on this CPU: count it at
    // the first device and remember it, skip it when it shows up again right after.
    u64 dev = read_ptr(skb + OFF_SKB_DEV);
    u64 lower_next = dev ? read_ptr(dev + OFF_DEV_ADJ_LOWER) : 0;
    int upper = lower_next && lower_next != dev + OFF_DEV_ADJ_LOWER;
    u64 now = bpf_ktime_get_ns();
    u32 zero = 0;
    struct stacked *st = stacked_seen.lookup(&zero);
    if (st) {
        if (st->skb == skb && now - st->ts < STACKED_WINDOW_NS) {
            st->ts = now;
            if (!upper)
                st->skb = 0; // reached the bottom of the stack
            return 0;
        }
        if (upper) {
            st->skb = skb;
            st->ts = now;
        }
    }
    struct udp_key k;
    __builtin_memset(&k, 0, sizeof(k));
    k.sk = sk;
    k.netns = sk_netns(sk);
    k.family = p.family;
    k.lport = p.sport;
    k.rport = p.dport;
    __builtin_memcpy(k.raddr, p.daddr, 16);
    udp_account(&k, p.saddr, LADDR_PACKET, p.l4len >= 8 ? p.l4len - 8 : 0, 1);
    return 0;
}

// ---- bytes per socket: sock:sock_send_length / sock:sock_recv_length -----------------------

#ifdef HAVE_SOCK_LENGTH
static __always_inline void tcp_bytes(u64 sk, int ret, int sent) {
    struct tcp_conn *c = tcp_conns.lookup(&sk);
    if (!c)
        return;
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

int on_sock_send_length(struct tp_sock_send_length *args) {
    u16 family = args->family;
    if (family != AF_INET && family != AF_INET6)
        return 0;
    int ret = args->ret;
    if (ret < 0 || (args->flags & MSG_PEEK))
        return 0;
    if (args->protocol == IPPROTO_TCP)
        tcp_bytes(args->sk, ret, 1);
    else if (args->protocol == IPPROTO_UDP)
        remember_owner(args->sk); // bytes are counted per packet in net_dev_queue
    return 0;
}

int on_sock_recv_length(struct tp_sock_recv_length *args) {
    u16 family = args->family;
    if (family != AF_INET && family != AF_INET6)
        return 0;
    int ret = args->ret;
    if (ret < 0 || (args->flags & (MSG_PEEK | MSG_ERRQUEUE)))
        return 0; // errors, peeks and the error queue (ICMP errors, timestamps) are not data
    u64 sk = args->sk;
    if (args->protocol == IPPROTO_TCP) {
        tcp_bytes(sk, ret, 0);
        return 0;
    }
    if (args->protocol != IPPROTO_UDP)
        return 0;
    remember_owner(sk);
#ifdef HAVE_RECV_SYSCALLS
    // recvfrom/recvmsg/recvmmsg with an address buffer: the kernel writes the sender's
    // address there after this point; account at the syscall's exit.
    u32 tid = bpf_get_current_pid_tgid();
    struct rx_stash *st = rx_stash.lookup(&tid);
    if (st) {
        u32 n = st->n;
        if (n == 0)
            st->sk = sk;
        if (st->sk == sk && n < RX_BATCH) {
            st->len[n & (RX_BATCH - 1)] = ret;
            st->n = n + 1;
            return 0;
        }
        stat_inc(STAT_RX_STASH_FULL);
    }
#endif
    u8 none[16] = {};
    udp_rx(sk, ret, 0, none, 0);
    return 0;
}
#endif // HAVE_SOCK_LENGTH

// ---- sender addresses of received datagrams: syscalls:sys_{enter,exit}_recv{from,msg,mmsg} --

#if defined(HAVE_SOCK_LENGTH) && defined(HAVE_RECV_SYSCALLS)
static __always_inline void stash(u32 kind, u64 uaddr) {
    u32 tid = bpf_get_current_pid_tgid();
    struct rx_stash st = {};
    st.kind = kind;
    st.uaddr = uaddr;
    rx_stash.update(&tid, &st);
}

int on_enter_recvfrom(struct tp_sys_enter_recvfrom *args) {
    if (args->addr)
        stash(RX_FROM, args->addr);
    return 0;
}

int on_enter_recvmsg(struct tp_sys_enter_recvmsg *args) {
    u64 name = 0; // struct user_msghdr starts with msg_name (UAPI)
    bpf_probe_read_user(&name, sizeof(name), (void *)args->msg);
    if (name)
        stash(RX_MSG, name);
    return 0;
}

int on_enter_recvmmsg(struct tp_sys_enter_recvmmsg *args) {
    if (args->mmsg)
        stash(RX_MMSG, args->mmsg);
    return 0;
}

// Account the stashed datagram i with the sender address the kernel wrote to user memory.
static __always_inline void rx_from_user(struct rx_stash *st, u32 i) {
    u64 uaddr = st->uaddr;
    if (st->kind == RX_MMSG) {
        uaddr = 0; // mmsghdr[i].msg_hdr.msg_name
        bpf_probe_read_user(&uaddr, sizeof(uaddr), (void *)(st->uaddr + i * MMSGHDR_SIZE));
    }
    u8 sa[24] = {};
    u8 peer[16] = {};
    u8 fam = 0;
    u16 port = 0;
    if (uaddr && bpf_probe_read_user(sa, sizeof(sa), (void *)uaddr) == 0) {
        u16 af;
        __builtin_memcpy(&af, sa, 2); // sa_family: host order
        port = ((u16)sa[2] << 8) | sa[3];
        if (af == AF_INET) {
            fam = 4;
            __builtin_memcpy(peer, &sa[4], 4);
        } else if (af == AF_INET6) {
            fam = 6;
            __builtin_memcpy(peer, &sa[8], 16);
        }
    }
    udp_rx(st->sk, st->len[i & (RX_BATCH - 1)], fam, peer, port);
}

static __always_inline int rx_exit(void) {
    u32 tid = bpf_get_current_pid_tgid();
    struct rx_stash *st = rx_stash.lookup(&tid);
    if (!st)
        return 0;
    u32 n = st->n;
#pragma unroll
    for (u32 i = 0; i < RX_BATCH; i++) {
        if (i < n)
            rx_from_user(st, i);
    }
    rx_stash.delete(&tid);
    return 0;
}

int on_exit_recvfrom(void *args) { return rx_exit(); }
int on_exit_recvmsg(void *args) { return rx_exit(); }
int on_exit_recvmmsg(void *args) { return rx_exit(); }
#endif

// ---- resets: tcp:tcp_send_reset, tcp:tcp_receive_reset -------------------------------------

static __always_inline void reset_conn(u64 sk, struct event *ev) {
    if (!sk)
        return;
    struct tcp_conn *c = tcp_conns.lookup(&sk);
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

int on_kfree_skb(struct tp_kfree_skb *args) {
    u32 reason = args->reason;
    if (reason < DROP_REASON_SLOTS) {
        u8 *ign = drop_ignore.lookup(&reason);
        if (ign && *ign)
            return 0; // consumed (not a drop), or NOT_SPECIFIED unless asked for
    }
    u64 skb = args->skbaddr;
    struct event ev = {};
    ev.type = EV_DROP;
    ev.ts = bpf_ktime_get_ns();
    ev.reason = reason;
    ev.location = args->location;
    struct pkt p = {};
    if (parse_skb(skb, args->protocol, &p)) {
        ev.family = p.family;
        ev.ipproto = p.ipproto;
        ev.have_ports = p.have_ports;
        __builtin_memcpy(ev.laddr, p.saddr, 16);
        __builtin_memcpy(ev.raddr, p.daddr, 16);
        ev.lport = p.sport;
        ev.rport = p.dport;
    }
    ev.netns = skb_netns(skb);
#ifdef HAVE_KFREE_RX_SK
    if (!ev.netns)
        ev.netns = sk_netns(args->rx_sk);
#endif
    emit(args, &ev);
    return 0;
}
