"""Run one function of this process under an x86 emulator whose CPU has
AVX-512 (F, BW, VL, DQ, VNNI, BF16) and AVX-VNNI, so kernels written for
CPUs this machine is not can be tested here against the scalar reference.

The emulator is Bochs's CPU (the `bochscpu-python` package from PyPI, Bochs
cpudb model "sapphire_rapids"). The function runs on this process's own
memory: every readable page of /proc/self/maps is mapped into the guest at
its own virtual address (guest physical pages alias the host pages), so
pointers built by ctypes work unchanged and what the function writes is seen
here at once. The function gets its arguments by the System V convention
(integers and pointers only), a private stack, and a return address that
is mapped nowhere: the page fault on it ends the run. Any other exception
(an invalid opcode, a fault) is an error naming the instruction's address.
Functions must not make system calls or take locks another thread holds:
kernels, not the thread pool.

bochscpu's Linux wheel is built against glibc 2.38 and asks for two of its
new symbols; on an older glibc (Debian 12 has 2.36) this module compiles a
two-function shim that forwards them to the old ones and loads it first.
"""
import ctypes
import os
import subprocess
import tempfile

PAGE = 4096
SPR_MODEL = 30  # index of "sapphire_rapids" in the Bochs cpudb compiled into bochscpu 0.4
RET_MAGIC = 0xDEAD000  # the return address: never mapped
STACK_PAGES = 64

_SHIM_C = r"""
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
int __isoc23_sscanf(const char *s, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int r = vsscanf(s, f, ap);
    va_end(ap);
    return r;
}
"""

_bochs = None
_why = None


def _load_bochs():
    global _bochs, _why
    if _bochs is not None or _why is not None:
        return _bochs
    try:
        import bochscpu  # noqa: F401
    except ImportError as e:
        if "__isoc23" not in str(e):
            _why = f"bochscpu-python is not installed ({e}); pip install bochscpu-python"
            return None
        cache = os.path.join(os.path.expanduser("~"), ".cache", "trinity")
        os.makedirs(cache, exist_ok=True)
        shim = os.path.join(cache, "libisoc23-shim.so")
        if not os.path.exists(shim):
            with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as f:
                f.write(_SHIM_C)
            tmp = shim + f".{os.getpid()}"
            subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", tmp, f.name], check=True)
            os.replace(tmp, shim)
            os.unlink(f.name)
        ctypes.CDLL(shim, mode=ctypes.RTLD_GLOBAL)
        try:
            import bochscpu  # noqa: F401,F811
        except ImportError as e2:
            _why = f"bochscpu-python does not load here ({e2})"
            return None
    import bochscpu
    import bochscpu.cpu
    import bochscpu.memory
    import bochscpu.utils.cpu
    # The CPU model is a Bochs parameter read when the CPU is made: choose it
    # before the first session.
    so = ctypes.CDLL(bochscpu._bochscpu.__file__)
    so.sim_get_param_enum.restype = ctypes.c_void_p
    param = so.sim_get_param_enum(b"cpu.model")
    if not param:
        _why = "bochscpu has no cpu.model parameter"
        return None
    so._ZN14bx_param_num_c3setEl(ctypes.c_void_p(param), ctypes.c_long(SPR_MODEL))
    _bochs = bochscpu
    return _bochs


def unavailable():
    """None when the emulator runs here, else why not."""
    _load_bochs()
    return _why


def _fs_base():
    libc = ctypes.CDLL(None, use_errno=True)
    out = ctypes.c_uint64()
    ARCH_GET_FS = 0x1003
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(158), ctypes.c_long(ARCH_GET_FS), ctypes.byref(out)) != 0:
        return 0
    return out.value


class EmuError(RuntimeError):
    pass


class Emulator:
    """One guest CPU. call() maps whatever this process has mapped by then."""

    def __init__(self):
        b = _load_bochs()
        if b is None:
            raise EmuError(_why)
        self.b = b
        self.sess = b.Session()
        self.sess.missing_page_handler = self._missing
        self.pt = b.memory.PageMapLevel4Table()
        self.mapped = {}  # host page -> guest physical page
        self.tables = set()
        self.next_gpa = 0x1000_0000
        self.pml4 = 0x1000
        self.stack = ctypes.create_string_buffer(PAGE * (STACK_PAGES + 1))
        self.fs = _fs_base()

    def _missing(self, gpa):
        raise EmuError(f"guest touched unmapped physical page {gpa:#x}")

    def _map_all(self):
        m = self.b.memory
        new = 0
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if parts[1][0] != "r" or (len(parts) > 5 and parts[5] in ("[vvar]", "[vsyscall]", "[vdso]")):
                    continue
                for va in range(lo, hi, PAGE):
                    if va in self.mapped:
                        continue
                    gpa = self.next_gpa
                    self.next_gpa += PAGE
                    # bochscpu's flags: 0 maps code (read, execute), 1 data (read, write)
                    self.pt.insert(va, gpa, 0 if "x" in parts[1] else 1)
                    m.page_insert(gpa, va)
                    self.mapped[va] = gpa
                    new += 1
        if new or not self.tables:
            # commit writes the whole tree afresh (new host pages): map them all again
            for hva, gpa in self.pt.commit(self.pml4):
                if gpa in self.tables:
                    m.page_remove(gpa)
                m.page_insert(gpa, hva)
                self.tables.add(gpa)

    def call(self, fn, *args, count=None):
        """Run fn(*args) (integers or pointers) to its return; rax. With
        count=[0], count[0] becomes the number of instructions executed (a
        Python callback per instruction: slow, for small cases; a proxy for
        a kernel's work, not its speed)."""
        b = self.b
        self._map_all()
        st = b.State()
        b.cpu.set_long_mode(st)
        cr0 = b.utils.cpu.CR0(st.cr0)
        cr4 = b.utils.cpu.CR4(st.cr4)
        cr0.MP = True
        cr0.EM = False
        cr4.OSFXSR = True
        cr4.OSXSAVE = True
        cr4.OSXMMEXCPT = True
        st.cr0 = int(cr0)
        st.cr4 = int(cr4)
        st.xcr0 = 0xE7  # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
        st.cr3 = self.pml4
        cs = b.Segment()
        cs.base, cs.limit, cs.selector = 0, 0xFFFFFFFF, 0x33
        flags = b.cpu.SegmentFlags()
        flags.A = flags.R = flags.E = flags.S = flags.P = flags.L = True
        cs.attr = int(flags)
        data = b.Segment()
        data.base, data.limit, data.selector, data.attr = 0, 0xFFFFFFFF, 0x2B, 0xCF3
        fs = b.Segment()
        fs.base, fs.limit, fs.selector, fs.attr = self.fs, 0xFFFFFFFF, 0, 0xCF3
        st.cs, st.ss, st.ds, st.es, st.gs = cs, data, data, data, data
        st.fs = fs
        st.mxcsr = 0x1F80
        st.fpcw = 0x37F
        st.rflags = 0x202
        top = (ctypes.addressof(self.stack) + PAGE * STACK_PAGES) & ~(PAGE - 1)
        # Entered as if by a call: [rsp] the return address, rsp + 8 16-byte
        # aligned (System V ABI); compiled code may keep aligned vectors on
        # the stack (clang's kernels do) and faults otherwise.
        rsp = top - 256 - 8
        stack_args = list(args[6:])
        words = [RET_MAGIC] + stack_args
        for i, w in enumerate(words):
            ctypes.c_uint64.from_address(rsp + 8 * i).value = w & 0xFFFFFFFFFFFFFFFF
        st.rsp = rsp
        st.rip = fn
        for reg, v in zip(("rdi", "rsi", "rdx", "rcx", "r8", "r9"), args):
            setattr(st, reg, v & 0xFFFFFFFFFFFFFFFF)
        self.sess.cpu.state = st
        end = {}

        def on_exception(sess, cpu_id, vector, error):
            end["exc"] = (vector, error, sess.cpu.rip, sess.cpu.cr2)
            sess.stop()

        hook = b.Hook()
        hook.exception = on_exception
        if count is not None:
            def on_instruction(sess, cpu_id, insn):
                count[0] += 1
            hook.after_execution = on_instruction
        self.sess.run([hook])
        vector, error, rip, cr2 = end.get("exc", (None, 0, 0, 0))
        if vector == 14 and cr2 == RET_MAGIC:
            return self.sess.cpu.state.rax
        raise EmuError(f"exception {vector} (error {error:#x}) at rip {rip:#x} ({describe(rip)}), cr2 {cr2:#x}")


def describe(addr):
    """'libfoo.so+0x1234' for an address in a mapped file."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= addr < hi and len(parts) > 5:
                    off = int(parts[2], 16)
                    return f"{os.path.basename(parts[5])}+{addr - lo + off:#x}"
    except OSError:
        pass
    return "?"
