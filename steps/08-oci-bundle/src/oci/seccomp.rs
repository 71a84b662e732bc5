//! `linux.seccomp`: an OCI seccomp profile compiled to a classic BPF
//! program and loaded with `seccomp(2)`.
//!
//! `seccomp(2)`: a filter is a small program the kernel runs on every
//! system call, over `struct seccomp_data` (`nr` at offset 0, `arch` at 4,
//! `args[i]` at 16 + 8·i), returning what to do: allow, fail with an errno,
//! kill, trap, log. The profile is a default action and a list of rules
//! (syscall names, optional argument conditions, an action); the first
//! rule that matches decides. The program we emit:
//!
//! ```text
//!   ld  arch                 ; not x86_64, or an x32 syscall number:
//!   jne AUDIT_ARCH_X86_64 ──▶ ret FOREIGN    (the default action, or
//!   ld  nr                   ;  KILL_PROCESS if the default allows, so
//!   jge 0x40000000 ───────▶ ret FOREIGN     ;  a deny-list cannot be
//!   ┌ ld  nr                 ;  bypassed through another ABI)
//!   │ jne NR ─────────────┐  ; one block per (rule, name)
//!   │ <argument checks> ──┤  ; each failing check jumps past the block
//!   │ ret ACTION          │
//!   └─────────────────────┘
//!   ...
//!   ret DEFAULT
//! ```
//!
//! Argument values are 64 bits and BPF words 32: each comparison looks at
//! the high word first, then the low one.
//!
//! A conditional jump's offsets are 8 bits: a block longer than 255
//! instructions (a rule with 64 or more argument conditions) cannot be
//! skipped in one jump. `Block::finish` then routes such a jump through
//! an unconditional `ja` (32-bit offset) placed right after it, a
//! trampoline; a program past the kernel's 4096 instructions is refused.
//!
//! Simplifications (named, each an error rather than a silent skip):
//! only the native x86_64 table of syscall names is known (names of other
//! architectures are skipped, as libseccomp does for names an architecture
//! lacks); `SCMP_ACT_NOTIFY` (it needs a listener socket) is refused.

use std::str::FromStr;

use nix::errno::Errno;
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

/// What can go wrong with a profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An action this runtime does not implement.
    #[error("linux.seccomp: action {0} is not supported")]
    Action(String),
    /// A flag this runtime does not know.
    #[error("linux.seccomp.flags: {0} is not supported")]
    Flag(String),
    /// An argument index past the six a syscall has.
    #[error("linux.seccomp: argument index {0} (a syscall has 6)")]
    ArgIndex(usize),
    /// The program is longer than the kernel takes.
    #[error(
        "linux.seccomp: the filter has {0} instructions; the kernel takes 4096"
    )]
    TooLong(usize),
    /// Loading the filter failed.
    #[error("cannot load the seccomp filter")]
    Load(#[source] Errno),
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

// Opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Syscall numbers of the x32 ABI have this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `BPF_MAXINSNS`.
const MAX_INSTRUCTIONS: usize = 4096;

fn load(offset: u32) -> Instruction {
    Instruction {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

fn ret(action: u32) -> Instruction {
    Instruction {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: action,
    }
}

// ANCHOR: action
/// The return value for `action` (`SECCOMP_RET_*`).
fn action(
    action: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<u32, Error> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill
        | LinuxSeccompAction::ScmpActKillThread => 0,
        LinuxSeccompAction::ScmpActKillProcess => 0x8000_0000,
        LinuxSeccompAction::ScmpActTrap => 0x0003_0000,
        LinuxSeccompAction::ScmpActErrno => {
            0x0005_0000 | (errno.unwrap_or(libc::EPERM as u32) & 0xffff)
        }
        LinuxSeccompAction::ScmpActTrace => {
            0x7ff0_0000 | (errno.unwrap_or(libc::EPERM as u32) & 0xffff)
        }
        LinuxSeccompAction::ScmpActLog => 0x7ffc_0000,
        LinuxSeccompAction::ScmpActAllow => 0x7fff_0000,
        other => return Err(Error::Action(format!("{other:?}"))),
    })
}
// ANCHOR_END: action

/// Whether this runtime can load a rule with `action` (a runtime's
/// `features`: told by the code that compiles it, not by a list).
pub fn supports_action(a: LinuxSeccompAction) -> bool {
    action(a, None).is_ok()
}

/// A jump target inside one rule's block.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// Past the block: this rule does not match.
    Fail,
    /// Over the `n` instructions that follow (as written, before any
    /// trampoline is inserted).
    Ahead(usize),
}

/// A block's instructions, with jumps still symbolic.
#[derive(Default)]
struct Block {
    code: Vec<(Instruction, Target, Target)>,
}

/// `BPF_JMP | BPF_JA`: an unconditional jump by `k`, 32 bits wide.
const JMP_JA: u16 = 0x05;

/// The farthest a conditional jump reaches: `jt` and `jf` are 8 bits.
const MAX_SHORT_JUMP: usize = u8::MAX as usize;

impl Block {
    fn plain(&mut self, instruction: Instruction) {
        self.code.push((instruction, Target::Next, Target::Next));
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.code.push((
            Instruction {
                code,
                jt: 0,
                jf: 0,
                k,
            },
            jt,
            jf,
        ));
    }

    /// A jump that skips `n` following instructions when taken.
    fn skip(&mut self, code: u16, k: u32, n: usize, taken_if_true: bool) {
        let (jt, jf) = if taken_if_true {
            (Target::Ahead(n), Target::Next)
        } else {
            (Target::Next, Target::Ahead(n))
        };
        self.jump(code, k, jt, jf);
    }

    // ANCHOR: finish
    /// Resolve the jumps and return the code.
    ///
    /// A conditional jump reaches at most 255 instructions ahead, and a
    /// rule with many argument checks is longer than that: a `Fail` jump
    /// from its start cannot reach its end. Such a jump goes instead to a
    /// *trampoline* right after it, an unconditional `JA` whose offset is
    /// 32 bits wide. Inserting trampolines moves the code after them, which
    /// can push another jump out of reach, so the layout is redone until no
    /// new trampoline is needed (each round only adds, so it ends).
    fn finish(self) -> Vec<Instruction> {
        let n = self.code.len();
        let mut trampoline = vec![false; n];
        let (at, end) = loop {
            // Where each instruction lands, and where the block ends.
            let mut at = Vec::with_capacity(n + 1);
            let mut pc = 0;
            for &far in &trampoline {
                at.push(pc);
                pc += if far { 2 } else { 1 };
            }
            at.push(pc);
            let mut grown = false;
            for (i, (_, jt, jf)) in self.code.iter().enumerate() {
                let fails =
                    matches!(jt, Target::Fail) || matches!(jf, Target::Fail);
                if fails && !trampoline[i] && at[n] - at[i] - 1 > MAX_SHORT_JUMP
                {
                    trampoline[i] = true;
                    grown = true;
                }
            }
            if !grown {
                break (at, pc);
            }
        };
        let mut out = Vec::with_capacity(end);
        for (i, (mut instruction, jt, jf)) in self.code.into_iter().enumerate()
        {
            // Offsets count from the instruction after this one.
            let from = at[i] + 1;
            let offset = |target: Target| -> u8 {
                let to = match target {
                    // Into the trampoline, right after us.
                    Target::Fail if trampoline[i] => from,
                    Target::Fail => end,
                    Target::Next => at[i + 1],
                    Target::Ahead(skip) => at[(i + 1 + skip).min(n)],
                };
                // Short by construction: Fail is relaxed above, Next and
                // Ahead span a handful of instructions.
                u8::try_from(to - from).unwrap_or(u8::MAX)
            };
            instruction.jt = offset(jt);
            instruction.jf = offset(jf);
            out.push(instruction);
            if trampoline[i] {
                out.push(Instruction {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: (end - (from + 1)) as u32,
                });
            }
        }
        out
    }
    // ANCHOR_END: finish
}

/// The checks that argument `index` `op` `value` (`value_two`): falling
/// through means it holds, `Fail` that it does not.
fn argument(
    block: &mut Block,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: u64,
) {
    let (lo, hi) = (16 + 8 * index as u32, 16 + 8 * index as u32 + 4);
    let (v_lo, v_hi) = (value as u32, (value >> 32) as u32);
    use LinuxSeccompOperator as Op;
    match op {
        Op::ScmpCmpEq => {
            block.plain(load(hi));
            block.jump(JMP_JEQ_K, v_hi, Target::Next, Target::Fail);
            block.plain(load(lo));
            block.jump(JMP_JEQ_K, v_lo, Target::Next, Target::Fail);
        }
        Op::ScmpCmpNe => {
            // Holds if either word differs.
            block.plain(load(hi));
            block.skip(JMP_JEQ_K, v_hi, 2, false); // high differs: holds
            block.plain(load(lo));
            block.jump(JMP_JEQ_K, v_lo, Target::Fail, Target::Next);
        }
        Op::ScmpCmpMaskedEq => {
            // value is the mask, value_two what the masked argument must be.
            block.plain(load(hi));
            block.plain(Instruction {
                code: ALU_AND_K,
                jt: 0,
                jf: 0,
                k: v_hi,
            });
            block.jump(
                JMP_JEQ_K,
                (two >> 32) as u32,
                Target::Next,
                Target::Fail,
            );
            block.plain(load(lo));
            block.plain(Instruction {
                code: ALU_AND_K,
                jt: 0,
                jf: 0,
                k: v_lo,
            });
            block.jump(JMP_JEQ_K, two as u32, Target::Next, Target::Fail);
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe | Op::ScmpCmpLt | Op::ScmpCmpLe => {
            // Unsigned 64-bit: the high words decide unless equal.
            let greater = matches!(op, Op::ScmpCmpGt | Op::ScmpCmpGe);
            let low_jump = match op {
                Op::ScmpCmpGt | Op::ScmpCmpLe => JMP_JGT_K,
                _ => JMP_JGE_K,
            };
            block.plain(load(hi));
            if greater {
                block.skip(JMP_JGT_K, v_hi, 3, true); // high greater: holds
                block.jump(JMP_JEQ_K, v_hi, Target::Next, Target::Fail);
                block.plain(load(lo));
                block.jump(low_jump, v_lo, Target::Next, Target::Fail);
            } else {
                block.jump(JMP_JGT_K, v_hi, Target::Fail, Target::Next);
                block.skip(JMP_JEQ_K, v_hi, 2, false); // high smaller: holds
                block.plain(load(lo));
                // LT: fails if lo >= v; LE: fails if lo > v.
                block.jump(low_jump, v_lo, Target::Fail, Target::Next);
            }
        }
    }
}

// ANCHOR: compile
/// Compile `profile` into a BPF program for x86_64.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<Instruction>, Error> {
    let default =
        action(profile.default_action(), profile.default_errno_ret())?;
    let allows = matches!(
        profile.default_action(),
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
    );
    // Another ABI must not slip past a deny-list.
    let foreign = if allows { 0x8000_0000 } else { default };
    let mut program = vec![
        load(4),
        Instruction {
            code: JMP_JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH_X86_64,
        },
        ret(foreign),
        load(0),
        Instruction {
            code: JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        ret(foreign),
    ];
    for rule in profile.syscalls().as_deref().unwrap_or_default() {
        let result = action(rule.action(), rule.errno_ret())?;
        for name in rule.names() {
            // A name this architecture does not have: nothing to filter.
            let Ok(sysno) = syscalls::Sysno::from_str(name) else {
                continue;
            };
            let mut block = Block::default();
            block.plain(load(0));
            block.jump(
                JMP_JEQ_K,
                sysno.id() as u32,
                Target::Next,
                Target::Fail,
            );
            for arg in rule.args().as_deref().unwrap_or_default() {
                if arg.index() > 5 {
                    return Err(Error::ArgIndex(arg.index()));
                }
                argument(
                    &mut block,
                    arg.index(),
                    arg.op(),
                    arg.value(),
                    arg.value_two().unwrap_or(0),
                );
            }
            block.plain(ret(result));
            program.extend(block.finish());
        }
    }
    program.push(ret(default));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(Error::TooLong(program.len()));
    }
    Ok(program)
}
// ANCHOR_END: compile

/// The `seccomp(2)` flags of a profile.
pub fn flags(profile: &LinuxSeccomp) -> Result<u32, Error> {
    let mut flags = 0;
    for flag in profile.flags().as_deref().unwrap_or_default() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            other => return Err(Error::Flag(format!("{other:?}"))),
        };
    }
    Ok(flags)
}

/// What to say when the container's process ended with `code`: killed
/// by `SIGSYS` (`128 + 31`) under a profile whose actions send it, the
/// actions that may have (the kernel does not tell which system call).
pub fn explain_exit(profile: &LinuxSeccomp, code: u8) -> Option<String> {
    if i32::from(code) != 128 + libc::SIGSYS {
        return None;
    }
    let sends_sigsys = |action: LinuxSeccompAction| {
        matches!(
            action,
            LinuxSeccompAction::ScmpActKill
                | LinuxSeccompAction::ScmpActKillThread
                | LinuxSeccompAction::ScmpActKillProcess
                | LinuxSeccompAction::ScmpActTrap
        )
    };
    let name = |action: LinuxSeccompAction| {
        serde_json::to_value(action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{action:?}"))
    };
    let mut causes = Vec::new();
    if sends_sigsys(profile.default_action()) {
        causes.push(format!(
            "{} (linux.seccomp.defaultAction)",
            name(profile.default_action())
        ));
    }
    for (i, rule) in profile.syscalls().iter().flatten().enumerate() {
        if sends_sigsys(rule.action()) {
            causes.push(format!(
                "{} (linux.seccomp.syscalls[{i}]: {})",
                name(rule.action()),
                rule.names().join(", ")
            ));
        }
    }
    if causes.is_empty() {
        return None;
    }
    Some(format!(
        "the container's process was killed by SIGSYS: a system call met the seccomp action {}",
        causes.join(" or ")
    ))
}

// ANCHOR: install
/// Load `program` for this process and its future children. Needs
/// `no_new_privs` or `CAP_SYS_ADMIN`.
pub fn install(program: &[Instruction], flags: u32) -> Result<(), Error> {
    crate::trace::event(8, || {
        format!(
            "seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}, {} instructions)",
            program.len()
        )
    });
    let filter: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to `filter`, alive until the call returns; the
    // kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    Errno::result(rc).map(drop).map_err(Error::Load)
}
// ANCHOR_END: install

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `program` on a syscall, as the kernel would.
    fn eval(
        program: &[Instruction],
        arch: u32,
        nr: u32,
        args: [u64; 6],
    ) -> u32 {
        let word = |offset: u32| -> u32 {
            match offset {
                0 => nr,
                4 => arch,
                o if o >= 16 => {
                    let i = ((o - 16) / 8) as usize;
                    if (o - 16) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                _ => 0,
            }
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program[pc];
            match i.code {
                LD_W_ABS => a = word(i.k),
                ALU_AND_K => a &= i.k,
                RET_K => return i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                    let taken = match i.code {
                        JMP_JEQ_K => a == i.k,
                        JMP_JGT_K => a > i.k,
                        _ => a >= i.k,
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
                other => panic!("unknown opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;

    #[test]
    fn allow_list_with_argument_conditions() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0x7E020000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_LT"}]}
            ]
        }));
        let program = compile(&p).unwrap();
        let x86 = AUDIT_ARCH_X86_64;
        let nr =
            |name: &str| syscalls::Sysno::from_str(name).unwrap().id() as u32;
        assert_eq!(eval(&program, x86, nr("read"), [0; 6]), ALLOW);
        assert_eq!(eval(&program, x86, nr("write"), [0; 6]), EPERM);
        assert_eq!(
            eval(&program, x86, nr("personality"), [8, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&program, x86, nr("personality"), [9, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            eval(&program, x86, nr("clone"), [0x11, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&program, x86, nr("clone"), [0x2000_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            eval(&program, x86, nr("mmap"), [0, 4096, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&program, x86, nr("mmap"), [0, 0x1_0000_0000, 0, 0, 0, 0]),
            EPERM
        );
        // Another ABI gets the default here (an allow-list).
        assert_eq!(eval(&program, 0x4000_0003, nr("read"), [0; 6]), EPERM);
    }

    #[test]
    fn deny_list_cannot_be_bypassed_through_another_abi() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                         {"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 2, "value": 5, "op": "SCMP_CMP_GT"},
                                   {"index": 2, "value": 10, "op": "SCMP_CMP_LE"}]}]
        }));
        let program = compile(&p).unwrap();
        let nr =
            |name: &str| syscalls::Sysno::from_str(name).unwrap().id() as u32;
        let x86 = AUDIT_ARCH_X86_64;
        assert_eq!(eval(&program, x86, nr("mkdir"), [0; 6]), 0x0005_000d);
        assert_eq!(eval(&program, x86, nr("rmdir"), [0; 6]), ALLOW);
        assert_eq!(
            eval(&program, x86, nr("getpid"), [0, 0, 7, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            eval(&program, x86, nr("getpid"), [0, 0, 11, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&program, x86, nr("getpid"), [0, 0, 5, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&program, x86, nr("getpid"), [0, 0, 1 << 40, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&program, 0x4000_0003, nr("rmdir"), [0; 6]),
            0x8000_0000
        );
        assert_eq!(
            eval(&program, x86, X32_SYSCALL_BIT | nr("mkdir"), [0; 6]),
            0x8000_0000
        );
    }

    #[test]
    fn a_rule_longer_than_a_short_jump_does_not_skip_the_rules_after_it() {
        // 70 conditions: about 280 instructions, past the 255 a
        // conditional jump reaches. A truncated offset would land inside
        // the block, or past the mkdir rule.
        let conditions: Vec<serde_json::Value> = (1..=70)
            .map(|v| serde_json::json!({"index": 0, "value": v, "op": "SCMP_CMP_NE"}))
            .collect();
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "args": conditions},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }));
        let program = compile(&p).unwrap();
        assert!(program.len() > 280, "{} instructions", program.len());
        assert!(program.iter().any(|i| i.code == JMP_JA));
        let nr =
            |name: &str| syscalls::Sysno::from_str(name).unwrap().id() as u32;
        let x86 = AUDIT_ARCH_X86_64;
        // Every condition holds: the rule matches.
        assert_eq!(
            eval(&program, x86, nr("getpid"), [100, 0, 0, 0, 0, 0]),
            EPERM
        );
        // The first, a middle and the last condition fail: the next rules.
        for arg in [1, 35, 70] {
            assert_eq!(
                eval(&program, x86, nr("getpid"), [arg, 0, 0, 0, 0, 0]),
                ALLOW
            );
        }
        assert_eq!(eval(&program, x86, nr("mkdir"), [0; 6]), 0x0005_000d);
        assert_eq!(eval(&program, x86, nr("rmdir"), [0; 6]), ALLOW);
    }

    #[test]
    fn a_filter_past_the_kernels_limit_is_refused() {
        let rules: Vec<serde_json::Value> = (0..1100)
            .map(|v| {
                serde_json::json!({"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
            })
            .collect();
        let p = profile(
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}),
        );
        let error = compile(&p).unwrap_err();
        assert!(matches!(error, Error::TooLong(n) if n > 4096), "{error}");
    }
}
