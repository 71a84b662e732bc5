//! `linux.resources.devices` on cgroup v2: an eBPF program that decides
//! every device access of the cgroup.
//!
//! cgroup v1 has a `devices` controller with `devices.allow` and
//! `devices.deny` files. cgroup v2 has no such files: it runs a program of
//! type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup
//! (`admin-guide/cgroup-v2.rst`, "Device controller") on every `open(2)`
//! and `mknod(2)` of a device node, over
//! `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (`access_type` is the access bits `<< 16` | the device type), and the
//! access is allowed if it returns 1.
//!
//! The rules are in the spec's order, where a later rule overrides an
//! earlier one; the program therefore tests them last to first, and the
//! first that matches returns; a rule that matches everything (`a`) ends
//! the program. Nothing matching: denied.
//!
//! ```text
//!   r2 = ctx->access_type & 0xffff   ; type: 1 block, 2 char
//!   r3 = ctx->access_type >> 16      ; access: 1 mknod, 2 read, 4 write
//!   r4 = ctx->major, r5 = ctx->minor
//!   ┌ if r2 != TYPE goto next        ; per rule, "*" parts skipped
//!   │ if r3 & ~ACCESS goto next      ; asks for more than the rule gives
//!   │ if r4 != MAJOR goto next
//!   │ if r5 != MINOR goto next
//!   └ r0 = ALLOW; exit
//!   r0 = 0; exit
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

/// What can go wrong with a device program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An access string with something else than `r`, `w`, `m`.
    #[error("linux.resources.devices: access {0:?} is not made of r, w and m")]
    Access(String),
    /// The kernel refused the program.
    #[error("the kernel refused the device program: {log}")]
    Load {
        /// The verifier's log.
        log: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Opening the cgroup or attaching failed.
    #[error("cannot attach the device program to {path:?}")]
    Attach {
        /// The cgroup directory.
        path: std::path::PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// One rule, in the terms of the v1 files: `allow`, type `a`/`b`/`c`,
/// major and minor (`None`: any), access bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow (or deny) what matches.
    pub allow: bool,
    /// `'a'` (all), `'b'` or `'c'`.
    pub kind: char,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_*` bits: 1 mknod, 2 read, 4 write.
    pub access: u32,
}

impl Rule {
    /// Parse a v1-style line (`c 1:3 rwm`, `a`) with its verdict.
    pub fn parse(allow: bool, line: &str) -> Result<Rule, Error> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let kind = fields.first().and_then(|f| f.chars().next()).unwrap_or('a');
        let number = |n: &str| n.parse::<u32>().ok();
        let (major, minor) =
            match fields.get(1).and_then(|mm| mm.split_once(':')) {
                Some((major, minor)) => (number(major), number(minor)),
                None => (None, None),
            };
        let access_text = fields.get(2).copied().unwrap_or("rwm");
        let mut access = 0;
        for c in access_text.chars() {
            access |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return Err(Error::Access(access_text.to_owned())),
            };
        }
        Ok(Rule {
            allow,
            kind,
            major,
            minor,
            access,
        })
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h, bpf_common.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

// ANCHOR: program
/// The program for `rules` (in the spec's order).
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut code = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut block = Vec::new();
        // Each check jumps over the rest of the block when it fails; the
        // offsets are filled in once the block's length is known.
        match rule.kind {
            'b' => block.push(insn(JMP_JNE_K, 2, 0, 0, 1)),
            'c' => block.push(insn(JMP_JNE_K, 2, 0, 0, 2)),
            _ => {}
        }
        if rule.access != 7 {
            block.push(insn(ALU64_MOV_X, 6, 3, 0, 0));
            block.push(insn(ALU64_AND_K, 6, 0, 0, !(rule.access as i32)));
            block.push(insn(JMP_JNE_K, 6, 0, 0, 0));
        }
        if let Some(major) = rule.major {
            block.push(insn(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(insn(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        let unconditional = block.is_empty();
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, instruction) in block.iter_mut().enumerate() {
            if instruction.code == JMP_JNE_K {
                instruction.off = (len - i - 1) as i16;
            }
        }
        code.extend(block);
        // A rule that matches everything ends the program: the verifier
        // refuses code that cannot be reached.
        if unconditional {
            return code;
        }
    }
    code.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    code.push(insn(JMP_EXIT, 0, 0, 0, 0));
    code
}
// ANCHOR_END: program

/// `bpf(2)` commands and constants.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for `BPF_PROG_LOAD` (the fields we set; the kernel
/// wants the rest zero).
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    padding: [u64; 12],
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    padding: [u64; 14],
}

// ANCHOR: attach
/// Load the program for `rules` and attach it to the cgroup directory
/// `cgroup`. It stays attached after we exit, until the cgroup is removed.
pub fn attach(cgroup: &Path, rules: &[Rule]) -> Result<(), Error> {
    let code = program(rules);
    crate::trace::event(8, || {
        format!(
            "bpf(BPF_PROG_LOAD, cgroup device program: {} rules, {} \
             instructions), BPF_PROG_ATTACH to {}",
            rules.len(),
            code.len(),
            cgroup.display()
        )
    });
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let load = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..LoadAttr::default()
    };
    // SAFETY: `load` points to the program, the license and the log buffer,
    // all alive until the call returns, with their true lengths.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const LoadAttr,
            std::mem::size_of::<LoadAttr>(),
        )
    };
    let fd = Errno::result(fd).map_err(|source| Error::Load {
        log: String::from_utf8_lossy(&log)
            .trim_end_matches('\0')
            .trim()
            .to_owned(),
        source,
    })?;
    // SAFETY: bpf(2) returned a new descriptor that nothing else owns.
    let program = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let failed = |source| Error::Attach {
        path: cgroup.to_owned(),
        source,
    };
    let dir = nix::fcntl::open(
        cgroup,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(failed)?;
    let attach = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..AttachAttr::default()
    };
    // SAFETY: `attach` holds two open descriptors and plain integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const AttachAttr,
            std::mem::size_of::<AttachAttr>(),
        )
    };
    Errno::result(rc).map(drop).map_err(failed)
}
// ANCHOR_END: attach

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `program` on one access, as the kernel would.
    fn eval(
        program: &[Insn],
        kind: u32,
        access: u32,
        major: u32,
        minor: u32,
    ) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = program[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn later_rules_override_earlier_ones_and_nothing_matching_is_denied() {
        let rules = [
            Rule::parse(false, "a").unwrap(),
            Rule::parse(true, "c 1:3 rwm").unwrap(),
            Rule::parse(true, "c 136:* rw").unwrap(),
            Rule::parse(false, "c 1:3 w").unwrap(),
        ];
        let program = program(&rules);
        const CHAR: u32 = 2;
        const BLOCK: u32 = 1;
        assert_eq!(eval(&program, CHAR, 2, 1, 3), 1, "read /dev/null");
        assert_eq!(
            eval(&program, CHAR, 4, 1, 3),
            0,
            "write /dev/null: the last rule"
        );
        assert_eq!(
            eval(&program, CHAR, 2, 1, 5),
            0,
            "read /dev/zero: denied by 'a'"
        );
        assert_eq!(eval(&program, CHAR, 6, 136, 7), 1, "read+write a pty");
        assert_eq!(
            eval(&program, CHAR, 1, 136, 7),
            0,
            "mknod a pty: not in 'rw'"
        );
        assert_eq!(eval(&program, BLOCK, 2, 1, 3), 0, "a block device 1:3");
        assert!(Rule::parse(true, "c 1:3 rwx").is_err());
    }
}
