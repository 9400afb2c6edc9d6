//! A Dockerfile parser: parser directives (`# escape=`), comments, line continuations,
//! instructions with their `--flags`, exec (JSON) and shell forms, `KEY=value` lists,
//! here-documents (`RUN <<EOF`, `COPY <<file.txt /dest`, `<<-EOF`, `<<"EOF"`), and
//! variable expansion (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`), as the
//! Dockerfile reference describes them. No crate on crates.io parses Dockerfiles
//! maintained and completely enough, so this is a small one.

use std::collections::BTreeMap;

/// One instruction, as written (variables not yet expanded).
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// Upper case: `FROM`, `RUN`, …
    pub keyword: String,
    /// `--name=value` flags before the arguments (`--from=build`, `--chown=1:1`).
    pub flags: Vec<(String, String)>,
    pub args: Args,
    /// The instruction's text after the keyword, continuations joined (for messages).
    pub text: String,
    /// The here-documents its `<<NAME` words introduce, in order (RUN, COPY, ADD).
    pub heredocs: Vec<Heredoc>,
}

/// A here-document: the lines after the instruction up to the one that is its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    pub name: String,
    /// The lines as written, each ending in a newline.
    pub body: String,
    /// `<<-NAME`: leading tabs are stripped from the lines (and the terminator).
    pub strip_tabs: bool,
    /// `<<"NAME"` or `<<'NAME'`: no variable expansion in the body.
    pub quoted: bool,
}

impl Heredoc {
    /// The document's content: its lines, tabs stripped for `<<-`.
    pub fn content(&self) -> String {
        if !self.strip_tabs {
            return self.body.clone();
        }
        self.body
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }

    /// The word that introduced it, as written (`<<-"EOF"`).
    pub fn marker(&self) -> String {
        let dash = if self.strip_tabs { "-" } else { "" };
        let quote = if self.quoted { "\"" } else { "" };
        format!("<<{dash}{quote}{}{quote}", self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// `["executable", "arg"]`
    Exec(Vec<String>),
    /// Everything after the flags, as one string.
    Shell(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("Dockerfile line {line}: unknown instruction {keyword} (known: {known})")]
    UnknownInstruction {
        line: usize,
        keyword: String,
        known: String,
    },
    #[error("Dockerfile line {line}: {message}")]
    Invalid { line: usize, message: String },
}

pub const INSTRUCTIONS: [&str; 18] = [
    "FROM",
    "ARG",
    "ENV",
    "LABEL",
    "WORKDIR",
    "COPY",
    "ADD",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "EXPOSE",
    "USER",
    "VOLUME",
    "SHELL",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
    "MAINTAINER",
];

/// Instructions whose flags are known (others take none).
fn known_flags(keyword: &str) -> &'static [&'static str] {
    match keyword {
        "FROM" => &["platform"],
        "RUN" => &["mount"],
        "COPY" => &["from", "chown", "chmod", "link"],
        "ADD" => &["chown", "chmod", "link", "checksum"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

/// Parses a whole Dockerfile into instructions, in order.
pub fn parse(text: &str) -> Result<Vec<Instruction>, ParseError> {
    let mut escape = '\\';
    let lines: Vec<&str> = text.lines().collect();
    // Parser directives: `# key=value` lines at the very top.
    let mut first = 0;
    for line in &lines {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                escape = match value.trim() {
                    "`" => '`',
                    "\\" => '\\',
                    other => {
                        return Err(ParseError::Invalid {
                            line: first + 1,
                            message: format!("escape must be \\ or `, not {other:?}"),
                        })
                    }
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        first += 1;
    }
    let mut out = Vec::new();
    let mut i = first;
    while i < lines.len() {
        let start = i;
        let trimmed = lines[i].trim();
        i += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // Join continuation lines; comment lines inside are dropped.
        let mut joined = String::new();
        let mut current = lines[start].trim_start().to_owned();
        loop {
            let trimmed_end = current.trim_end();
            if let Some(body) = trimmed_end.strip_suffix(escape) {
                joined.push_str(body);
                // The next non-comment line continues this instruction.
                let mut next = None;
                while i < lines.len() {
                    let candidate = lines[i];
                    i += 1;
                    if candidate.trim_start().starts_with('#') {
                        continue;
                    }
                    next = Some(candidate.to_owned());
                    break;
                }
                match next {
                    Some(n) => current = n,
                    None => break,
                }
            } else {
                joined.push_str(&current);
                break;
            }
        }
        let mut inst = instruction(start + 1, joined.trim())?;
        if matches!(inst.keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for (name, strip_tabs, quoted) in heredoc_markers(&inst.text) {
                let mut body = String::new();
                loop {
                    let Some(line) = lines.get(i) else {
                        return Err(ParseError::Invalid {
                            line: start + 1,
                            message: format!(
                                "the here-document <<{name} is not closed by a line {name}"
                            ),
                        });
                    };
                    i += 1;
                    let bare = if strip_tabs {
                        line.trim_start_matches('\t')
                    } else {
                        line
                    };
                    if bare == name {
                        break;
                    }
                    body.push_str(line);
                    body.push('\n');
                }
                inst.heredocs.push(Heredoc {
                    name,
                    body,
                    strip_tabs,
                    quoted,
                });
            }
        }
        out.push(inst);
    }
    Ok(out)
}

/// The here-documents an instruction's words introduce: each word that starts with
/// `<<` (not `<<<`, a here-string), then `-` to strip tabs, then the name, quoted or
/// not. A `<<` inside a word (`$((1<<2))`) is not one, as for BuildKit.
fn heredoc_markers(text: &str) -> Vec<(String, bool, bool)> {
    let mut found = Vec::new();
    for word in unquoted_words(text) {
        let Some(rest) = word.strip_prefix("<<") else {
            continue;
        };
        if rest.starts_with('<') {
            continue;
        }
        let (strip_tabs, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (quoted, name) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => match rest[1..].strip_suffix(q) {
                Some(name) => (true, name),
                None => continue,
            },
            _ => (false, rest),
        };
        // A name becomes a file name for COPY: never `.` or `..`.
        let valid = !name.bytes().all(|b| b == b'.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if valid {
            found.push((name.to_owned(), strip_tabs, quoted));
        }
    }
    found
}

/// The words of `text` that start outside quotes (`echo "a <<EOF"` has no such word
/// starting with `<<`), split at whitespace outside quotes, as a shell splits them.
fn unquoted_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut quote: Option<char> = None;
    let mut start: Option<(usize, bool)> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c) if c.is_whitespace() => {
                if let Some((s, outside)) = start.take() {
                    if outside {
                        words.push(&text[s..i]);
                    }
                }
                continue;
            }
            (None, '"' | '\'') => quote = Some(c),
            _ => {}
        }
        if start.is_none() {
            // A word that opens with a quote is a quoted word (`"<<EOF"`), unless it
            // is a marker's own quotes (`<<"EOF"`), which start after `<<`.
            start = Some((i, !matches!(c, '"' | '\'')));
        }
    }
    if let Some((s, true)) = start {
        words.push(&text[s..]);
    }
    words
}

fn instruction(line: usize, text: &str) -> Result<Instruction, ParseError> {
    let (keyword, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim_start()),
        None => (text, ""),
    };
    let keyword = keyword.to_ascii_uppercase();
    if !INSTRUCTIONS.contains(&keyword.as_str()) {
        return Err(ParseError::UnknownInstruction {
            line,
            keyword,
            known: INSTRUCTIONS.join(", "),
        });
    }
    let mut rest = rest;
    let mut flags = Vec::new();
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, after) = match flag.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim_start()),
            None => (flag, ""),
        };
        let (name, value) = word.split_once('=').unwrap_or((word, "true"));
        if !known_flags(&keyword).contains(&name) {
            return Err(ParseError::Invalid {
                line,
                message: format!("{keyword} does not support --{name}"),
            });
        }
        flags.push((name.to_owned(), value.to_owned()));
        rest = after;
    }
    let args = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(exec) if rest.starts_with('[') => Args::Exec(exec),
        _ => Args::Shell(rest.to_owned()),
    };
    Ok(Instruction {
        line,
        keyword,
        flags,
        args,
        text: text[text.find(char::is_whitespace).unwrap_or(text.len())..]
            .trim()
            .to_owned(),
        heredocs: Vec::new(),
    })
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn invalid(&self, message: impl Into<String>) -> ParseError {
        ParseError::Invalid {
            line: self.line,
            message: format!("{} {}: {}", self.keyword, self.text, message.into()),
        }
    }

    /// The shell-form text, or the exec-form words joined (for instructions whose
    /// arguments are words either way).
    pub fn raw(&self) -> String {
        match &self.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(words) => words.join(" "),
        }
    }
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` from `vars`;
/// `\$` is a literal `$`. Unset variables expand to nothing.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                out.push('$');
                chars.next();
            }
            '$' => match chars.peek() {
                Some('{') => {
                    chars.next();
                    let mut inner = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        inner.push(c);
                    }
                    if !closed {
                        return Err(format!("missing }} in {text:?}"));
                    }
                    let (name, op) = match inner.find(':') {
                        Some(i) => (&inner[..i], Some(&inner[i..])),
                        None => (inner.as_str(), None),
                    };
                    let value = vars.get(name).filter(|v| !v.is_empty());
                    match op {
                        None => out.push_str(vars.get(name).map_or("", String::as_str)),
                        Some(op) if op.starts_with(":-") => match value {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&expand(&op[2..], vars)?),
                        },
                        Some(op) if op.starts_with(":+") => {
                            if value.is_some() {
                                out.push_str(&expand(&op[2..], vars)?);
                            }
                        }
                        Some(op) => return Err(format!("unsupported modifier {op:?} in {text:?}")),
                    }
                }
                Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                    let mut name = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            name.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push_str(vars.get(&name).map_or("", String::as_str));
                }
                _ => out.push('$'),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A Go-style duration (`30s`, `1m30s`, `500ms`, `2h`) in nanoseconds, as image
/// configs store HEALTHCHECK timings.
pub fn duration_ns(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration (like 30s, 1m30s, 500ms)");
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(total as i64)
}

/// Splits shell-like words: whitespace separates, quotes group, backslash escapes.
pub fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in {text:?}"));
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// `KEY=value KEY2="two words"` (or the legacy `KEY value` form when there is no `=`)
/// as pairs, after variable expansion.
pub fn key_values(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let first = text.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        // `ENV KEY the rest is the value`
        let (key, value) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("expected KEY=value, got {text:?}"))?;
        return Ok(vec![(key.to_owned(), expand(value.trim(), vars)?)]);
    }
    words(text)?
        .into_iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("expected KEY=value, got {w:?}"))?;
            Ok((k.to_owned(), expand(v, vars)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn instructions_flags_forms_and_continuations() {
        let parsed = parse(
            "# syntax=docker/dockerfile:1\n\
             # a comment\n\
             from base AS build\n\
             RUN echo one \\\n\
             # dropped comment\n\
               && echo two\n\
             COPY --from=build --chown=1:2 /a /b\n\
             CMD [\"/bin/sh\", \"-c\", \"echo hi\"]\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].keyword, "FROM");
        assert_eq!(parsed[0].raw(), "base AS build");
        assert_eq!(parsed[1].line, 4);
        assert_eq!(parsed[1].args, Args::Shell("echo one && echo two".into()));
        assert_eq!(parsed[2].flag("from"), Some("build"));
        assert_eq!(parsed[2].flag("chown"), Some("1:2"));
        assert_eq!(
            parsed[3].args,
            Args::Exec(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
    }

    #[test]
    fn unknown_instructions_and_flags_name_their_line() {
        let e = parse("FROM scratch\n\nFROBNICATE x\n").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Dockerfile line 3: unknown instruction FROBNICATE"));
        let e = parse("FROM scratch\nRUN --network=none true\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile line 2: RUN does not support --network"
        );
    }

    #[test]
    fn escape_directive() {
        let parsed = parse("# escape=`\nRUN dir c:\\ `\n  && echo\n").unwrap();
        assert_eq!(parsed[0].args, Args::Shell("dir c:\\   && echo".into()));
    }

    #[test]
    fn variables_expand_like_docker() {
        let v = vars(&[("A", "1"), ("EMPTY", "")]);
        assert_eq!(expand("$A ${A}x \\$A", &v).unwrap(), "1 1x $A");
        assert_eq!(
            expand("${B:-dflt} ${A:-dflt} ${EMPTY:-e}", &v).unwrap(),
            "dflt 1 e"
        );
        assert_eq!(expand("${A:+yes}${B:+no}", &v).unwrap(), "yes");
        assert!(expand("${A", &v).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns("30s").unwrap(), 30_000_000_000);
        assert_eq!(duration_ns("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration_ns("500ms").unwrap(), 500_000_000);
        assert!(duration_ns("10").is_err());
        assert!(duration_ns("soon").is_err());
    }

    #[test]
    fn key_value_lists() {
        let v = vars(&[("X", "ex")]);
        assert_eq!(
            key_values("A=1 B=\"two words\" C=$X", &v).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "ex".into())
            ]
        );
        assert_eq!(
            key_values("LEGACY value with spaces", &v).unwrap(),
            [("LEGACY".into(), "value with spaces".into())]
        );
    }

    #[test]
    fn here_documents() {
        let text = "FROM scratch\nRUN <<EOF\necho one\necho two\nEOF\nCOPY <<-\"app.conf\" <<b.txt /etc/\n\tport=$PORT\n\tapp.conf\nsecond\nb.txt\nRUN python3 <<'PY' > /out\nprint(1)\nPY\nRUN echo $((1<<2)) <<<here\nLABEL after=yes\n";
        let parsed = parse(text).unwrap();
        let keywords: Vec<&str> = parsed.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(keywords, ["FROM", "RUN", "COPY", "RUN", "RUN", "LABEL"]);
        assert_eq!(parsed[1].heredocs.len(), 1);
        assert_eq!(parsed[1].heredocs[0].body, "echo one\necho two\n");
        let copy = &parsed[2].heredocs;
        assert_eq!(copy.len(), 2);
        assert!(copy[0].strip_tabs && copy[0].quoted && copy[0].name == "app.conf");
        assert_eq!(copy[0].content(), "port=$PORT\n");
        assert_eq!(
            (copy[1].name.as_str(), copy[1].body.as_str()),
            ("b.txt", "second\n")
        );
        assert!(parsed[3].heredocs[0].quoted);
        // `1<<2` inside a word and a here-string are not here-documents.
        assert!(parsed[4].heredocs.is_empty());
        assert_eq!(parsed[5].line, 15);
        // Not closed: an error naming the line and the document.
        let e = parse("FROM scratch\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile line 2: the here-document <<EOF is not closed by a line EOF"
        );
        // Inside quotes, `<<` starts no document.
        let parsed = parse("FROM scratch\nRUN echo \"a <<EOF b\" 'c <<X'\nLABEL a=b\n").unwrap();
        assert!(parsed[1].heredocs.is_empty());
        assert_eq!(parsed[2].keyword, "LABEL");
        // Names that would be paths are not documents.
        for bad in ["RUN <<..", "RUN <<.", "RUN <<a/b"] {
            let parsed = parse(&format!("FROM scratch\n{bad}\n")).unwrap();
            assert!(parsed[1].heredocs.is_empty(), "{bad}");
        }
    }
}
