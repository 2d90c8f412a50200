//! Device access control for containers on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup, enforcing the same
//! rules the v1 `devices` controller gets (the spec's `linux.resources.devices`, then the
//! default allow list below; the last matching rule decides, no match denies).
//!
//! Why this is ours and not libcontainer's: libcontainer 0.7 keeps its v2 device filter
//! behind the `cgroupsv2_devices` feature. Without that feature it applies NO device
//! rules on a v2 host and says nothing, so an unprivileged container could open any device
//! node it can mknod (CAP_MKNOD is in docker's default set) or finds in an image layer,
//! e.g. the host's disks. With the feature, its apply first raises RLIMIT_MEMLOCK to
//! 128 MiB and fails every container start when it cannot (a root without
//! CAP_SYS_RESOURCE, as on the machine this was written on), although kernels since 5.11
//! charge BPF programs to the memory cgroup instead; the feature also needs libelf to
//! build. The program here is small (a few instructions per rule) and needs no memlock
//! beyond the default.
//!
//! The shim attaches it between libcontainer's create and start, while the init process
//! still waits before exec, so nothing of the user's runs without it.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Access bits of `struct bpf_cgroup_dev_ctx` (`BPF_DEVCG_ACC_*`).
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// Device types of `struct bpf_cgroup_dev_ctx` (`BPF_DEVCG_DEV_*`).
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// One device rule; `None` fields match anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// [`DEV_BLOCK`] or [`DEV_CHAR`]; `None` for type `a` (all).
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Bits of [`ACC_MKNOD`], [`ACC_READ`], [`ACC_WRITE`].
    pub access: u32,
}

const fn allow_char(major: Option<u32>, minor: Option<u32>, access: u32) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind: Some(DEV_CHAR),
        major,
        minor,
        access,
    }
}

/// What every container may use whatever its spec says, the same list runc and
/// libcontainer apply on v1: mknod of any node; null, zero, full, tty, urandom, random,
/// console, ptmx, the pts devices and tun.
pub const DEFAULT_ALLOW: &[DeviceRule] = &[
    allow_char(None, None, ACC_MKNOD),
    DeviceRule {
        allow: true,
        kind: Some(DEV_BLOCK),
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    allow_char(Some(1), Some(3), ACC_ALL),
    allow_char(Some(1), Some(5), ACC_ALL),
    allow_char(Some(1), Some(7), ACC_ALL),
    allow_char(Some(5), Some(0), ACC_ALL),
    allow_char(Some(1), Some(9), ACC_ALL),
    allow_char(Some(1), Some(8), ACC_ALL),
    allow_char(Some(5), Some(1), ACC_ALL),
    allow_char(Some(136), None, ACC_ALL),
    allow_char(Some(5), Some(2), ACC_ALL),
    allow_char(Some(10), Some(200), ACC_ALL),
];

/// Access bits of an OCI access string (`"rwm"`); unknown letters are ignored, an empty
/// or absent string means all.
pub fn access_bits(access: Option<&str>) -> u32 {
    let a = access.unwrap_or("");
    if a.is_empty() {
        return ACC_ALL;
    }
    a.chars().fold(0, |b, c| match c {
        'r' => b | ACC_READ,
        'w' => b | ACC_WRITE,
        'm' => b | ACC_MKNOD,
        _ => b,
    })
}

/// The spec's rules followed by [`DEFAULT_ALLOW`] (later rules win, as on v1).
pub fn rules_for(spec_devices: &[LinuxDeviceCgroup]) -> Vec<DeviceRule> {
    let mut rules: Vec<DeviceRule> = spec_devices
        .iter()
        .filter_map(|d| {
            let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
                LinuxDeviceType::A => None,
                LinuxDeviceType::B => Some(DEV_BLOCK),
                LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
                // pipes cannot be opened as devices; a rule for them has no effect
                LinuxDeviceType::P => return None,
            };
            Some(DeviceRule {
                allow: d.allow(),
                kind,
                major: d.major().and_then(|m| u32::try_from(m).ok()),
                minor: d.minor().and_then(|m| u32::try_from(m).ok()),
                access: access_bits(d.access().as_deref()),
            })
        })
        .collect();
    rules.extend_from_slice(DEFAULT_ALLOW);
    rules
}

#[cfg(test)]
fn rule_matches(r: &DeviceRule, kind: u32, major: u32, minor: u32, access: u32) -> bool {
    r.kind.is_none_or(|k| k == kind)
        && access & ACC_ALL & !r.access == 0
        && r.major.is_none_or(|m| m == major)
        && r.minor.is_none_or(|m| m == minor)
}

/// Whether `rules` allow `access` to a device: what the generated program computes,
/// as plain Rust (the reference its tests compare with).
#[cfg(test)]
pub fn decide(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| rule_matches(r, kind, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// True when `rules` allow every access (a privileged container): no program needed.
pub fn allows_everything(rules: &[DeviceRule]) -> bool {
    // The last unconditional rule decides everything the rules after it do not allow;
    // those are allow rules only when it is an allow itself.
    match rules.iter().rposition(|r| {
        r.kind.is_none() && r.major.is_none() && r.minor.is_none() && r.access == ACC_ALL
    }) {
        Some(i) => rules[i].allow && rules[i..].iter().all(|r| r.allow),
        None => false,
    }
}

// --- program generation ---------------------------------------------------------------

/// One eBPF instruction: opcode, dst and src registers, offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The kernel's `struct bpf_insn` layout (little-endian hosts: dst in the low nibble).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

// Opcodes (class | op | source), from linux/bpf.h and linux/bpf_common.h.
const LDX_W_MEM: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

// Registers: r1 = ctx on entry; r2 = type, r3 = access, r4 = major, r5 = minor, r6 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;
const R_TMP: u8 = 6;

/// The program for `rules`: rules are tried last to first, the first that matches returns
/// its verdict (1 allow, 0 deny); no match returns 0.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
        // with access_type = (access << 16) | type
        insn(LDX_W_MEM, R_TYPE, R1, 0, 0),
        insn(MOV64_X, R_ACCESS, R_TYPE, 0, 0),
        insn(AND64_K, R_TYPE, 0, 0, 0xffff),
        insn(RSH64_K, R_ACCESS, 0, 0, 16),
        insn(LDX_W_MEM, R_MAJOR, R1, 4, 0),
        insn(LDX_W_MEM, R_MINOR, R1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each check is a jump past the rest of this rule's block when it fails.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(k) = r.kind {
            checks.push(vec![insn(JNE_K, R_TYPE, 0, 0, k as i32)]);
        }
        if r.access & ACC_ALL != ACC_ALL {
            // requested bits outside the rule's set: the rule does not apply
            checks.push(vec![
                insn(MOV64_X, R_TMP, R_ACCESS, 0, 0),
                insn(AND64_K, R_TMP, 0, 0, (!r.access & ACC_ALL) as i32),
                insn(JNE_K, R_TMP, 0, 0, 0),
            ]);
        }
        if let Some(m) = r.major {
            checks.push(vec![insn(JNE_K, R_MAJOR, 0, 0, m as i32)]);
        }
        if let Some(m) = r.minor {
            checks.push(vec![insn(JNE_K, R_MINOR, 0, 0, m as i32)]);
        }
        let verdict = [
            insn(MOV64_K, R0, 0, 0, r.allow as i32),
            insn(EXIT, 0, 0, 0, 0),
        ];
        let total: usize = checks.iter().map(Vec::len).sum::<usize>() + verdict.len();
        let mut done = 0;
        for c in checks {
            done += c.len();
            let mut c = c;
            if let Some(last) = c.last_mut() {
                // jump offsets count from the next instruction
                last.off = (total - done) as i16;
            }
            p.extend(c);
        }
        p.extend(verdict);
        if total == verdict.len() {
            // An unconditional rule decides everything left: the verifier rejects
            // unreachable instructions, so nothing may follow it.
            return p;
        }
    }
    p.push(insn(MOV64_K, R0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// --- loading and attaching ---------------------------------------------------------------

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (the kernel accepts a
/// shorter attr and treats the rest as zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The leading fields of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out prefix of union bpf_attr for `cmd`, and its
    // size is passed, so the kernel reads (and for PROG_LOAD writes the log) within bounds
    // of the buffers the attr points to, which outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Why the device filter could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    /// The kernel refused the program; `verifier` is its log (empty when it gave none).
    #[error(
        "loading the device filter (bpf BPF_PROG_LOAD): {source}{}{}",
        if verifier.is_empty() { "" } else { "; verifier: " },
        verifier
    )]
    Load {
        #[source]
        source: std::io::Error,
        verifier: String,
    },
    #[error("opening {}: {source}", dir.display())]
    OpenCgroup {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching the device filter to {} (bpf BPF_PROG_ATTACH): {source}", dir.display())]
    Attach {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn load(insns: &[Insn]) -> Result<OwnedFd, DeviceFilterError> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(first) => {
            // Once more with the verifier's log, for the error message.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                // SAFETY: as above.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(DeviceFilterError::Load {
                source: first,
                verifier: text.trim().to_string(),
            })
        }
    }
}

/// Loads the program for `rules` and attaches it to the cgroup directory `cgroup_dir`
/// (alongside programs its ancestors have: all of them must allow an access).
pub fn attach(cgroup_dir: &Path, rules: &[DeviceRule]) -> Result<(), DeviceFilterError> {
    let prog = load(&program(rules))?;
    let dir = File::open(cgroup_dir).map_err(|source| DeviceFilterError::OpenCgroup {
        dir: cgroup_dir.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| DeviceFilterError::Attach {
        dir: cgroup_dir.to_path_buf(),
        source,
    })?;
    // The attachment holds the program; our descriptors close here.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn deny_all() -> Vec<DeviceRule> {
        let d = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        rules_for(&[d])
    }

    #[test]
    fn default_container_rules() {
        let r = deny_all();
        // the usual devices
        assert!(decide(&r, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE)); // /dev/null
        assert!(decide(&r, DEV_CHAR, 136, 4, ACC_READ)); // a pts
        assert!(decide(&r, DEV_CHAR, 10, 200, ACC_READ | ACC_WRITE)); // tun
                                                                      // mknod of anything, but no access to it
        assert!(decide(&r, DEV_BLOCK, 253, 0, ACC_MKNOD));
        assert!(!decide(&r, DEV_BLOCK, 253, 0, ACC_READ));
        assert!(!decide(&r, DEV_CHAR, 1, 1, ACC_READ)); // /dev/mem
        assert!(!allows_everything(&r));
    }

    #[test]
    fn privileged_allows_everything() {
        let a = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        let r = rules_for(&[a]);
        assert!(allows_everything(&r));
        assert!(decide(&r, DEV_BLOCK, 8, 0, ACC_READ | ACC_WRITE));
        // a later deny-all undoes it
        let mut r2 = r.clone();
        r2.push(DeviceRule {
            allow: false,
            kind: None,
            major: None,
            minor: None,
            access: ACC_ALL,
        });
        assert!(!allows_everything(&r2));
        assert!(!decide(&r2, DEV_CHAR, 1, 3, ACC_READ));
    }

    #[test]
    fn access_strings() {
        assert_eq!(access_bits(Some("rwm")), ACC_ALL);
        assert_eq!(access_bits(Some("r")), ACC_READ);
        assert_eq!(access_bits(Some("mw")), ACC_MKNOD | ACC_WRITE);
        assert_eq!(access_bits(None), ACC_ALL);
    }

    #[test]
    fn encoding_matches_struct_bpf_insn() {
        // r4 = *(u32 *)(r1 + 4)
        assert_eq!(
            insn(LDX_W_MEM, 4, 1, 4, 0).encode(),
            [0x61, 0x14, 4, 0, 0, 0, 0, 0]
        );
        // if r2 != 2 goto +3
        assert_eq!(
            insn(JNE_K, 2, 0, 3, 2).encode(),
            [0x55, 0x02, 3, 0, 2, 0, 0, 0]
        );
    }

    /// A tiny interpreter for exactly the instructions [`program`] emits, to check the
    /// generated jumps against [`decide`] for every rule set and device we care about.
    fn run(
        p: &[Insn],
        reached: &mut [bool],
        kind: u32,
        major: u32,
        minor: u32,
        access: u32,
    ) -> u64 {
        let mut reg = [0u64; 11];
        let ctx = [(access << 16) | kind, major, minor];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            reached[pc] = true;
            pc += 1;
            let (d, s) = (i.dst as usize, i.src as usize);
            match i.code {
                LDX_W_MEM => {
                    assert_eq!(s, 1, "loads only from ctx");
                    reg[d] = ctx[(i.off / 4) as usize] as u64;
                }
                MOV64_X => reg[d] = reg[s],
                MOV64_K => reg[d] = i.imm as i64 as u64,
                AND64_K => reg[d] &= i.imm as i64 as u64,
                RSH64_K => reg[d] >>= i.imm,
                JNE_K => {
                    if reg[d] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i.off as i64) as usize;
                    }
                }
                EXIT => return reg[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn program_agrees_with_reference_semantics() {
        let mut sets = vec![deny_all()];
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        sets.push(rules_for(&[allow_all]));
        // user rules: allow reading block 8:* then deny 8:1 entirely
        let user = [
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::B)
                .major(8)
                .access("r")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::B)
                .major(8)
                .minor(1)
                .access("rwm")
                .build()
                .unwrap(),
        ];
        sets.push(rules_for(&user));
        for rules in &sets {
            let p = program(rules);
            assert_eq!(p.last().map(|i| i.code), Some(EXIT));
            let mut reached = vec![false; p.len()];
            for kind in [DEV_BLOCK, DEV_CHAR] {
                for (major, minor) in [
                    (1, 3),
                    (1, 5),
                    (1, 7),
                    (1, 8),
                    (1, 9),
                    (5, 0),
                    (5, 1),
                    (5, 2),
                    (10, 200),
                    (136, 7),
                    (1, 1),
                    (8, 0),
                    (8, 1),
                    (253, 0),
                ] {
                    for access in 1..=ACC_ALL {
                        assert_eq!(
                            run(&p, &mut reached, kind, major, minor, access) == 1,
                            decide(rules, kind, major, minor, access),
                            "kind {kind} {major}:{minor} access {access} rules {rules:?}"
                        );
                    }
                }
            }
            // the kernel's verifier refuses unreachable instructions
            assert!(reached.iter().all(|&r| r), "unreachable code in {p:?}");
        }
    }

    #[test]
    fn errors_say_which_step_failed_with_the_verifier_log_when_there_is_one() {
        let denied = || std::io::Error::from_raw_os_error(libc::EPERM);
        let e = DeviceFilterError::Load {
            source: denied(),
            verifier: String::new(),
        };
        assert!(e
            .to_string()
            .starts_with("loading the device filter (bpf BPF_PROG_LOAD): "));
        assert!(!e.to_string().contains("verifier"), "{e}");
        let e = DeviceFilterError::Load {
            source: denied(),
            verifier: "R0 !read_ok".into(),
        };
        assert!(e.to_string().ends_with("; verifier: R0 !read_ok"), "{e}");
        let e = DeviceFilterError::Attach {
            dir: "/sys/fs/cgroup/x".into(),
            source: denied(),
        };
        assert!(e
            .to_string()
            .starts_with("attaching the device filter to /sys/fs/cgroup/x"));
        assert!(
            std::error::Error::source(&e).is_some(),
            "the OS error is kept as source"
        );
    }
}
