//! A Dockerfile, parsed as Docker's classic builder reads it (the
//! [Dockerfile reference][reference]): parser directives at the top
//! (`# escape=`), comments, lines continued by the escape character,
//! then one instruction per logical line, its keyword in any case, its
//! `--flags`, and its arguments in the *exec* form (a JSON array) or the
//! *shell* form (a string).
//!
//! Parsing is the plan; running it is the builder's. Nothing here
//! touches a file or a container, so every rule is a unit test.
//!
//! [reference]: https://docs.docker.com/reference/dockerfile/

use std::collections::BTreeMap;

/// A Dockerfile that cannot be read: Docker's words, with the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dockerfile parse error on line {line}: {message}")]
pub struct ParseError {
    /// The line (1-based) of the instruction.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The arguments of `RUN`, `CMD`, `ENTRYPOINT` (and `SHELL`, exec only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `["executable", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `echo $HOME`: given to the shell (`SHELL`, default `/bin/sh -c`).
    Shell(String),
}

/// One instruction of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=P] IMAGE [AS NAME]` (`scratch`: nothing).
    From {
        /// The image, or an earlier stage's name.
        image: String,
        /// `AS name`.
        alias: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    /// `RUN`: a command in a container of the image so far.
    Run(Command),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `COPY` or `ADD` (`add`: URLs refused, local tars unpacked).
    Copy {
        /// `ADD` rather than `COPY`.
        add: bool,
        /// The sources, relative to the context (or to `--from`'s root).
        sources: Vec<String>,
        /// The destination, relative to `WORKDIR` unless absolute.
        dest: String,
        /// `--from=STAGE|IMAGE`.
        from: Option<String>,
        /// `--chown=USER[:GROUP]`.
        chown: Option<String>,
    },
    /// `ENV k=v …` (or the old `ENV k v`).
    Env(Vec<(String, String)>),
    /// `ARG name[=default]`.
    Arg {
        /// The name.
        name: String,
        /// Its default.
        default: Option<String>,
    },
    /// `LABEL k=v …`.
    Label(Vec<(String, String)>),
    /// `WORKDIR /path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE 80/tcp …`.
    Expose(Vec<String>),
    /// `VOLUME ["/data"]` or `VOLUME /a /b`.
    Volume(Vec<String>),
    /// `STOPSIGNAL SIGTERM`.
    Stopsignal(String),
    /// `SHELL ["executable", "-c"]` (exec form only).
    Shell(Vec<String>),
}

/// An instruction and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The line (1-based).
    pub line: usize,
    /// The instruction as written, continuation lines joined (what the
    /// build prints, and part of the cache key).
    pub text: String,
    /// The instruction, its variables not yet substituted for the
    /// instructions that take them (the builder knows their values).
    pub instruction: Instruction,
}

/// A logical line: the instruction text and where it starts.
struct Logical {
    line: usize,
    text: String,
}

/// The logical lines of `source`: directives read, comments dropped,
/// continuations joined.
fn logical_lines(source: &str) -> Result<Vec<Logical>, ParseError> {
    let mut escape = '\\';
    let mut lines = source.lines().enumerate().peekable();
    // Parser directives: `# key=value` lines at the very top.
    while let Some((_, line)) = lines.peek() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError {
                        line: lines.peek().map_or(1, |(n, _)| n + 1),
                        message: format!(
                            "invalid escape token {other:?}: it must be \\ or `"
                        ),
                    });
                }
            };
        }
        lines.next();
    }
    let mut out: Vec<Logical> = Vec::new();
    let mut current: Option<Logical> = None;
    for (index, raw) in lines {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none())
        {
            continue;
        }
        let body = raw.trim_end();
        let (body, continued) = match body.strip_suffix(escape) {
            Some(rest) => (rest, true),
            None => (body, false),
        };
        match current.as_mut() {
            Some(logical) => {
                logical.text.push(' ');
                logical.text.push_str(body.trim());
            }
            None => {
                current = Some(Logical {
                    line: index + 1,
                    text: body.trim().to_owned(),
                });
            }
        }
        if !continued && let Some(done) = current.take() {
            out.push(done);
        }
    }
    out.extend(current);
    Ok(out)
}

/// Parse a Dockerfile.
pub fn parse(source: &str) -> Result<Vec<Step>, ParseError> {
    let mut steps = Vec::new();
    for logical in logical_lines(source)? {
        let line = logical.line;
        let error = |message: String| ParseError { line, message };
        let (keyword, rest) = logical
            .text
            .split_once(char::is_whitespace)
            .unwrap_or((&logical.text, ""));
        let rest = rest.trim();
        let keyword = keyword.to_ascii_uppercase();
        let (flags, rest) = flags(rest);
        let allowed: &[&str] = match keyword.as_str() {
            "FROM" => &["platform"],
            "COPY" => &["from", "chown"],
            "ADD" => &["chown"],
            _ => &[],
        };
        if let Some(flag) =
            flags.keys().find(|f| !allowed.contains(&f.as_str()))
        {
            return Err(error(format!("unknown flag: --{flag}")));
        }
        let needs_args = |what: &str| {
            if rest.is_empty() {
                Err(error(format!("{what} requires at least one argument")))
            } else {
                Ok(())
            }
        };
        let instruction = match keyword.as_str() {
            "FROM" => {
                needs_args("FROM")?;
                let words: Vec<&str> = rest.split_whitespace().collect();
                let (image, alias) = match words.as_slice() {
                    [image] => (image.to_string(), None),
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (image.to_string(), Some(name.to_ascii_lowercase()))
                    }
                    _ => {
                        return Err(error(
                            "FROM takes an image and optionally AS name".into(),
                        ));
                    }
                };
                Instruction::From {
                    image,
                    alias,
                    platform: flags.get("platform").cloned(),
                }
            }
            "RUN" => {
                needs_args("RUN")?;
                Instruction::Run(command(rest))
            }
            "CMD" => Instruction::Cmd(command(rest)),
            "ENTRYPOINT" => Instruction::Entrypoint(command(rest)),
            "SHELL" => match command(rest) {
                Command::Exec(words) if !words.is_empty() => {
                    Instruction::Shell(words)
                }
                _ => {
                    return Err(error(
                        "SHELL requires the arguments to be in JSON form"
                            .into(),
                    ));
                }
            },
            "COPY" | "ADD" => {
                let mut words = match json_array(rest) {
                    Some(words) => words,
                    None => split_words(rest),
                };
                if words.len() < 2 {
                    return Err(error(format!(
                        "{keyword} requires at least two arguments"
                    )));
                }
                let dest = words.pop().unwrap_or_default();
                Instruction::Copy {
                    add: keyword == "ADD",
                    sources: words,
                    dest,
                    from: flags.get("from").cloned(),
                    chown: flags.get("chown").cloned(),
                }
            }
            "ENV" | "LABEL" => {
                needs_args(&keyword)?;
                let pairs = pairs(rest, keyword == "ENV").map_err(error)?;
                if keyword == "ENV" {
                    Instruction::Env(pairs)
                } else {
                    Instruction::Label(pairs)
                }
            }
            "ARG" => {
                needs_args("ARG")?;
                let (name, default) = match rest.split_once('=') {
                    Some((name, default)) => {
                        (name.to_owned(), Some(unquote(default)))
                    }
                    None => (rest.to_owned(), None),
                };
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(error(format!(
                        "ARG names one variable: {rest:?}"
                    )));
                }
                Instruction::Arg { name, default }
            }
            "WORKDIR" => {
                needs_args("WORKDIR")?;
                Instruction::Workdir(rest.to_owned())
            }
            "USER" => {
                needs_args("USER")?;
                Instruction::User(rest.to_owned())
            }
            "EXPOSE" => {
                needs_args("EXPOSE")?;
                Instruction::Expose(split_words(rest))
            }
            "VOLUME" => {
                needs_args("VOLUME")?;
                Instruction::Volume(
                    json_array(rest).unwrap_or_else(|| split_words(rest)),
                )
            }
            "STOPSIGNAL" => {
                needs_args("STOPSIGNAL")?;
                Instruction::Stopsignal(rest.to_owned())
            }
            "MAINTAINER" => {
                Instruction::Label(vec![("maintainer".into(), rest.to_owned())])
            }
            "" => continue,
            other => {
                return Err(error(format!("unknown instruction: {other}")));
            }
        };
        steps.push(Step {
            line,
            text: logical.text.clone(),
            instruction,
        });
    }
    let is_from = |s: &Step| matches!(s.instruction, Instruction::From { .. });
    let Some(first) = steps.iter().position(is_from) else {
        return Err(ParseError {
            line: steps.first().map_or(1, |s| s.line),
            message: "the Dockerfile has no FROM".into(),
        });
    };
    let is_arg = |s: &&Step| matches!(s.instruction, Instruction::Arg { .. });
    if let Some(early) = steps[..first].iter().find(|s| !is_arg(s)) {
        return Err(ParseError {
            line: early.line,
            message: "no build stage in current context: only ARG may come before the first FROM".into(),
        });
    }
    Ok(steps)
}

/// The leading `--name=value` flags of `text`, and the rest.
fn flags(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut flags = BTreeMap::new();
    let mut rest = text;
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (name, value) =
            flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
        flags.insert(name.to_ascii_lowercase(), value.to_owned());
        rest = flag[end..].trim_start();
    }
    (flags, rest)
}

/// `text` as a JSON array of strings, if it is one.
fn json_array(text: &str) -> Option<Vec<String>> {
    if !text.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(text).ok()
}

/// The exec form if `text` is a JSON array of strings, else the shell
/// form (as Docker: a malformed array is a shell command).
fn command(text: &str) -> Command {
    match json_array(text) {
        Some(words) => Command::Exec(words),
        None => Command::Shell(text.to_owned()),
    }
}

/// Words split at unquoted whitespace, quotes removed (`a "b c"` is `a`,
/// `b c`); variables are left for [`substitute`].
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                word.push('\\');
                word.extend(chars.next());
                in_word = true;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `"value"` or `'value'` without its quotes.
fn unquote(text: &str) -> String {
    split_words(text).join(" ")
}

/// `k=v k2="v 2"` (or, for `ENV` alone, the old `k v w`: one pair).
fn pairs(text: &str, legacy: bool) -> Result<Vec<(String, String)>, String> {
    let words = split_words(text);
    if !words.first().is_some_and(|w| w.contains('=')) {
        if !legacy {
            return Err(format!("expected KEY=VALUE: {text:?}"));
        }
        let (key, value) =
            text.split_once(char::is_whitespace).ok_or_else(|| {
                format!("ENV names a variable and a value: {text:?}")
            })?;
        return Ok(vec![(key.to_owned(), value.trim().to_owned())]);
    }
    words
        .into_iter()
        .map(|word| {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("expected KEY=VALUE, got {word:?}"))?;
            if key.is_empty() {
                return Err(format!("an empty key: {word:?}"));
            }
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// `text` with `$NAME`, `${NAME}`, `${NAME:-default}` and
/// `${NAME:+alternative}` replaced from `vars` (unset: empty); `\$` is
/// a literal `$`, and nothing in single quotes is replaced.
pub fn substitute(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut in_single = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_single = !in_single;
                out.push(c);
            }
            '\\' if !in_single && chars.peek() == Some(&'$') => {
                out.push('$');
                chars.next();
            }
            '$' if !in_single => {
                if chars.peek() == Some(&'{') {
                    chars.next();
                    let inner: String =
                        chars.by_ref().take_while(|c| *c != '}').collect();
                    let (name, operator) = match inner.split_once(':') {
                        Some((name, op)) => {
                            (name.to_owned(), Some(op.to_owned()))
                        }
                        None => (inner.clone(), None),
                    };
                    let value = vars(&name).filter(|v| !v.is_empty());
                    match operator {
                        Some(op) if op.starts_with('-') => {
                            out.push_str(
                                &value.unwrap_or_else(|| op[1..].to_owned()),
                            );
                        }
                        Some(op) if op.starts_with('+') => {
                            if value.is_some() {
                                out.push_str(&op[1..]);
                            }
                        }
                        _ => out.push_str(&vars(&name).unwrap_or_default()),
                    }
                } else {
                    let mut name = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            name.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    if name.is_empty() {
                        out.push('$');
                    } else {
                        out.push_str(&vars(&name).unwrap_or_default());
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_parses_with_its_line() {
        let source = "\
# syntax=docker/dockerfile:1
# a comment
ARG BASE=busybox
FROM $BASE AS build
RUN echo one && \\
    # a comment inside a continuation
    echo two
RUN [\"sh\", \"-c\", \"echo exec\"]
COPY --chown=1:2 a b* /dest/
ADD [\"with space\", \"/x\"]
ENV A=1 B=\"two words\"
ENV OLD style value
LABEL version=\"1.0\" maintainer=me
WORKDIR /app
USER 1000:1000
EXPOSE 80 443/udp
VOLUME [\"/data\"]
STOPSIGNAL SIGINT
SHELL [\"/bin/sh\", \"-ec\"]
CMD [\"run\"]
entrypoint /bin/sh
FROM scratch
COPY --from=build /out /
";
        let steps = parse(source).unwrap();
        let lines: Vec<usize> = steps.iter().map(|s| s.line).collect();
        assert_eq!(
            lines,
            [
                3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                22, 23
            ]
        );
        assert_eq!(steps[2].text, "RUN echo one && echo two");
        assert_eq!(
            steps[1].instruction,
            Instruction::From {
                image: "$BASE".into(),
                alias: Some("build".into()),
                platform: None
            }
        );
        assert_eq!(
            steps[4].instruction,
            Instruction::Copy {
                add: false,
                sources: vec!["a".into(), "b*".into()],
                dest: "/dest/".into(),
                from: None,
                chown: Some("1:2".into())
            }
        );
        assert_eq!(
            steps[6].instruction,
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(
            steps[7].instruction,
            Instruction::Env(vec![("OLD".into(), "style value".into())])
        );
        assert_eq!(
            steps[3].instruction,
            Instruction::Run(Command::Exec(vec![
                "sh".into(),
                "-c".into(),
                "echo exec".into()
            ]))
        );
        assert_eq!(
            steps[16].instruction,
            Instruction::Entrypoint(Command::Shell("/bin/sh".into()))
        );
    }

    #[test]
    fn errors_name_the_line() {
        let error = parse("FROM busybox\n\nFOO bar\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "dockerfile parse error on line 3: unknown instruction: FOO"
        );
        assert_eq!(parse("FROM a\nCOPY onlyone\n").unwrap_err().line, 2);
        assert_eq!(parse("RUN echo\n").unwrap_err().line, 1);
        assert_eq!(
            parse("FROM a\nCOPY --bogus=1 a b\n").unwrap_err().message,
            "unknown flag: --bogus"
        );
        assert!(parse("# just a comment\n").is_err());
    }

    #[test]
    fn the_escape_directive_changes_continuations() {
        let steps =
            parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo x\n").unwrap();
        assert_eq!(steps[1].text, "RUN dir c:\\ && echo x");
    }

    #[test]
    fn variables_substitute_as_docker_does() {
        let vars = |name: &str| match name {
            "A" => Some("1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(substitute("$A ${A} x${A}y", &vars), "1 1 x1y");
        assert_eq!(
            substitute("${NONE:-d} ${EMPTY:-d} ${A:-d}", &vars),
            "d d 1"
        );
        assert_eq!(substitute("${A:+set} ${NONE:+set}.", &vars), "set .");
        assert_eq!(substitute("'$A' \\$A $ end", &vars), "'$A' $A $ end");
    }
}
