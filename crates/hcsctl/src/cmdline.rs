//! Joining an argument vector into one Windows command line.
//!
//! HCS takes a process's command line as a single `CommandLine` string, which the guest splits
//! with the rules of `CommandLineToArgvW`. [`join_command_line`] is the inverse of that split:
//!
//! * The **program** (first argument) has no escapes in `CommandLineToArgvW`: quotes toggle and
//!   are dropped, backslashes are literal. It is wrapped in quotes when it is empty or contains a
//!   space or tab; it cannot contain a `"` (no command line can express that).
//! * Every other argument is written as is when it is non-empty and contains no space, tab or
//!   `"`. Otherwise it is wrapped in quotes; inside, a run of `n` backslashes followed by a `"`
//!   becomes `2n + 1` backslashes and `\"`, and a run of `n` backslashes at the end becomes `2n`
//!   backslashes before the closing quote. Other backslashes are literal.

use std::fmt;

/// Why an argument vector has no command-line form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The argument vector is empty.
    Empty,
    /// The program name contains a `"`, which `CommandLineToArgvW` cannot give back.
    QuoteInProgram(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Empty => f.write_str("no command given"),
            JoinError::QuoteInProgram(p) => {
                write!(f, "the program name `{p}` contains a double quote, which a Windows command line cannot express")
            }
        }
    }
}

impl std::error::Error for JoinError {}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Joins `args` (program first) into a command line that `CommandLineToArgvW` splits back into
/// exactly `args`.
///
/// ```ignore
/// assert_eq!(join_command_line(&["echo", "a b", r#"say "hi""#]).unwrap(), r#"echo "a b" "say \"hi\"""#);
/// ```
pub fn join_command_line<S: AsRef<str>>(args: &[S]) -> Result<String, JoinError> {
    let (program, rest) = args.split_first().ok_or(JoinError::Empty)?;
    let program = program.as_ref();
    if program.contains('"') {
        return Err(JoinError::QuoteInProgram(program.to_owned()));
    }
    let mut line = String::new();
    if program.is_empty() || program.chars().any(is_blank) {
        line.push('"');
        line.push_str(program);
        line.push('"');
    } else {
        line.push_str(program);
    }
    for arg in rest {
        line.push(' ');
        quote_arg(arg.as_ref(), &mut line);
    }
    Ok(line)
}

fn quote_arg(arg: &str, out: &mut String) {
    if !arg.is_empty() && !arg.chars().any(|c| is_blank(c) || c == '"') {
        out.push_str(arg);
        return;
    }
    out.push('"');
    let mut backslashes = 0usize;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcs_sim::cmdline::split_command_line as split;

    fn roundtrip(args: &[String]) {
        let line = join_command_line(args).unwrap();
        assert_eq!(split(&line), args, "command line {line:?}");
    }

    #[test]
    fn plain_arguments_are_joined_with_spaces() {
        assert_eq!(
            join_command_line(&["echo", "hello", "world"]).unwrap(),
            "echo hello world"
        );
    }

    #[test]
    fn arguments_with_blanks_quotes_or_empty_are_quoted() {
        assert_eq!(
            join_command_line(&["echo", "a b", "", "x\ty"]).unwrap(),
            "echo \"a b\" \"\" \"x\ty\""
        );
        assert_eq!(
            join_command_line(&["echo", r#"say "hi""#]).unwrap(),
            r#"echo "say \"hi\"""#
        );
    }

    #[test]
    fn backslashes_are_doubled_only_before_quotes() {
        assert_eq!(join_command_line(&["x", r"a\b"]).unwrap(), r"x a\b");
        assert_eq!(join_command_line(&["x", r"a\\b c"]).unwrap(), r#"x "a\\b c""#);
        assert_eq!(
            join_command_line(&["x", r"dir with space\"]).unwrap(),
            r#"x "dir with space\\""#
        );
        assert_eq!(join_command_line(&["x", r#"a\"b"#]).unwrap(), r#"x "a\\\"b""#);
    }

    #[test]
    fn program_with_blank_is_quoted_without_escapes() {
        assert_eq!(
            join_command_line(&[r"C:\Program Files\x.exe", "y"]).unwrap(),
            r#""C:\Program Files\x.exe" y"#
        );
        roundtrip(&[r"C:\dir with space\".to_owned(), "y".to_owned()]);
        roundtrip(&[String::new()]);
    }

    #[test]
    fn program_with_quote_or_empty_vector_is_rejected() {
        assert_eq!(join_command_line::<&str>(&[]), Err(JoinError::Empty));
        assert!(matches!(
            join_command_line(&["a\"b"]),
            Err(JoinError::QuoteInProgram(_))
        ));
    }

    /// Every string of up to 4 characters over the interesting alphabet, as an argument after a
    /// program and next to another argument, survives join → `CommandLineToArgvW` split.
    #[test]
    fn join_then_split_round_trips_every_short_argument() {
        const ALPHABET: [char; 5] = ['a', ' ', '\t', '"', '\\'];
        let mut words = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for w in &frontier {
                for c in ALPHABET {
                    let mut s = w.clone();
                    s.push(c);
                    next.push(s);
                }
            }
            words.extend(next.iter().cloned());
            frontier = next;
        }
        assert_eq!(words.len(), 1 + 5 + 25 + 125 + 625);
        for w in &words {
            roundtrip(&["prog".to_owned(), w.clone()]);
            roundtrip(&["prog".to_owned(), w.clone(), "z".to_owned()]);
            roundtrip(&["prog".to_owned(), "\\".to_owned(), w.clone()]);
            if !w.contains('"') {
                roundtrip(&[w.clone(), "arg".to_owned()]);
            }
        }
    }
}
