/* Hide AVX-512 and VNNI from a process, at native speed: an LD_PRELOAD library for benchmarks/masked_cpu.py.
 *
 * Libraries pick their kernels by the CPUID instruction (ONNX Runtime's MLAS, numpy, XNNPACK in TFLite).
 * Linux can make CPUID fault in user space where the CPU supports it (arch_prctl ARCH_SET_CPUID, the
 * "cpuid_fault" flag of /proc/cpuinfo).  At load this library records the real answers of every CPUID leaf
 * and subleaf, clears the AVX-512, AVX-VNNI, AVX512-BF16 and AMX bits, turns faulting on, and answers each
 * faulting CPUID from the masked table in a SIGSEGV handler.  The setting is inherited by threads and
 * forked children; LD_PRELOAD carries it across exec.  So the process runs the kernels an AVX2-only CPU
 * would run (Zen 3, Haswell to Coffee Lake), on this core: the instruction mix is an AVX2 machine's, the
 * core's width, caches and clock are this machine's.
 *
 * A program that installs its own SIGSEGV handler (a JVM, Python's faulthandler) would lose the answers:
 * the benchmarks run without one.  If faulting cannot be turned on, the library aborts the process with a
 * message rather than let it run unmasked.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

#define SUBLEAVES 64
#define MAX_ENTRIES 8192

struct entry { unsigned leaf, sub, r[4]; };
static struct entry table[MAX_ENTRIES];
static int entries;

static void mask(unsigned leaf, unsigned sub, unsigned r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                  (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24, AMX-INT8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX-VNNI 4, AVX512-BF16 5, AMX-FP16 21, AVX-IFMA 23; EDX: AVX-VNNI-INT8 4, AVX-VNNI-INT16 10 */
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        r[3] &= ~((1u << 4) | (1u << 10));
    } else if (leaf == 0xd && sub == 0) {
        r[0] &= ~(0xe0u | (3u << 17)); /* the AVX-512 and AMX state components the OS offers */
    } else if (leaf == 0x24) {
        r[0] = r[1] = r[2] = r[3] = 0; /* AVX10 */
    }
}

static void record_range(unsigned first) {
    unsigned a, b, c, d;
    __cpuid_count(first, 0, a, b, c, d);
    unsigned last = a;
    if (last < first || last - first > 0x40) last = first;
    for (unsigned leaf = first; leaf <= last; leaf++)
        for (unsigned sub = 0; sub < SUBLEAVES && entries < MAX_ENTRIES; sub++) {
            struct entry *e = &table[entries++];
            e->leaf = leaf;
            e->sub = sub;
            __cpuid_count(leaf, sub, e->r[0], e->r[1], e->r[2], e->r[3]);
            mask(leaf, sub, e->r);
        }
}

static void answer(int sig, siginfo_t *si, void *ctx) {
    (void)si;
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: let it kill the process as it would have */
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX];
    unsigned r[4] = {0, 0, 0, 0};
    for (int i = 0; i < entries; i++)
        if (table[i].leaf == leaf && (table[i].sub == sub || (sub >= SUBLEAVES && table[i].sub == 0))) {
            memcpy(r, table[i].r, sizeof r);
            break;
        }
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide_avx512(void) {
    record_range(0);
    record_range(0x40000000);
    record_range(0x80000000);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = answer;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fputs("masked_cpu: this kernel or CPU cannot make CPUID fault (no cpuid_fault); refusing to run unmasked\n",
              stderr);
        _exit(3);
    }
}
