//! Windows command lines: joining an argument vector into the one `CommandLine` string HCS
//! takes, and splitting such a string back into arguments, both with the rules of
//! `CommandLineToArgvW` (as documented by Microsoft and implemented by Rust's `std` on Windows).
//! Clients (`hcsctl`, the containerd shim) join; the simulator, which runs Unix programs, splits
//! as a Windows guest's C runtime would. [`join_command_line`] is the inverse of
//! [`split_command_line`] for every argument vector a command line can express.
//!
//! Splitting:
//!
//! * The **first** argument (the program) is special: a `"` toggles quoting and is dropped, a
//!   space or tab outside quotes ends it, and backslashes are literal.
//! * In the remaining arguments, spaces and tabs outside quotes separate arguments (runs of them
//!   count once).
//! * `2n` backslashes followed by `"` give `n` backslashes and the quote toggles quoting;
//!   `2n + 1` backslashes followed by `"` give `n` backslashes and a literal `"`.
//! * Backslashes not followed by `"` are literal.
//! * Inside quotes, `""` gives one literal `"` (and quoting continues).
//! * A quoted empty string (`""`) is an empty argument.
//!
//! Joining:
//!
//! * The program is wrapped in quotes when it is empty or contains a space or tab; it cannot
//!   contain a `"` (no command line can express that: [`JoinError::QuoteInProgram`]).
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
/// ```
/// # use hcs_schema::cmdline::join_command_line;
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

/// Appends `arg` to `out`, quoted and escaped as a non-first argument of a command line.
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

/// Splits `line` with the `CommandLineToArgvW` rules. An empty (or all-blank) line gives an
/// empty vector.
///
/// ```
/// use hcs_schema::cmdline::split_command_line;
/// assert_eq!(split_command_line(r#"cmd /c "echo hi""#), ["cmd", "/c", "echo hi"]);
/// assert_eq!(split_command_line(r#"x a\\\"b "c""d""#), ["x", r#"a\"b"#, r#"c"d"#]);
/// ```
pub fn split_command_line(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    // Leading blanks are not part of the program name.
    while i < chars.len() && is_blank(chars[i]) {
        i += 1;
    }
    if i >= chars.len() {
        return args;
    }

    // The program name: quotes toggle, no escapes, a blank outside quotes ends it.
    let mut cur = String::new();
    let mut in_quotes = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '"' => in_quotes = !in_quotes,
            c if is_blank(c) && !in_quotes => break,
            c => cur.push(c),
        }
    }
    args.push(cur);
    while i < chars.len() && is_blank(chars[i]) {
        i += 1;
    }

    // The arguments.
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut started = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            c if is_blank(c) && !in_quotes => {
                args.push(std::mem::take(&mut cur));
                started = false;
                while i < chars.len() && is_blank(chars[i]) {
                    i += 1;
                }
            }
            '\\' => {
                started = true;
                let mut count = 1;
                while i < chars.len() && chars[i] == '\\' {
                    count += 1;
                    i += 1;
                }
                if i < chars.len() && chars[i] == '"' {
                    cur.extend(std::iter::repeat_n('\\', count / 2));
                    if count % 2 == 1 {
                        cur.push('"');
                        i += 1;
                    }
                } else {
                    cur.extend(std::iter::repeat_n('\\', count));
                }
            }
            '"' if in_quotes => {
                if i < chars.len() && chars[i] == '"' {
                    cur.push('"');
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
            '"' => {
                started = true;
                in_quotes = true;
            }
            c => {
                started = true;
                cur.push(c);
            }
        }
    }
    if started || !cur.is_empty() || in_quotes {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod join_tests {
    use super::split_command_line as split;
    use super::*;

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

#[cfg(test)]
mod split_tests {
    use super::split_command_line as split;

    #[test]
    fn plain_words_split_on_runs_of_blanks() {
        assert_eq!(split("a  b\tc"), ["a", "b", "c"]);
        assert_eq!(split("  a b  "), ["a", "b"]);
        assert!(split("").is_empty());
        assert!(split(" \t ").is_empty());
    }

    #[test]
    fn quotes_group_blanks_and_are_removed() {
        assert_eq!(split(r#"a "b c" d"#), ["a", "b c", "d"]);
        assert_eq!(split(r#"a b" "c"#), ["a", "b c"]);
    }

    #[test]
    fn program_name_has_no_escapes_and_quotes_toggle() {
        assert_eq!(
            split(r#""C:\Program Files\x.exe" y"#),
            [r"C:\Program Files\x.exe", "y"]
        );
        assert_eq!(split(r#"C:\a\"b c" d"#), [r"C:\a\b c", "d"]);
        assert_eq!(split(r"C:\dir\ x"), [r"C:\dir\", "x"]);
    }

    #[test]
    fn backslashes_before_quote_are_halved_and_odd_count_escapes_the_quote() {
        // 2n backslashes + quote: n backslashes, quote toggles.
        assert_eq!(split(r#"x a\\"b c" d"#), ["x", r"a\b c", "d"]);
        // 2n+1 backslashes + quote: n backslashes and a literal quote.
        assert_eq!(split(r#"x a\"b"#), ["x", r#"a"b"#]);
        assert_eq!(split(r#"x a\\\"b"#), ["x", r#"a\"b"#]);
        // backslashes not followed by a quote are literal.
        assert_eq!(split(r"x a\\b c\d\"), ["x", r"a\\b", r"c\d\"]);
    }

    #[test]
    fn doubled_quote_inside_quotes_is_a_literal_quote() {
        assert_eq!(split(r#"x "a""b" c"#), ["x", r#"a"b"#, "c"]);
        assert_eq!(split(r#"x """"#), ["x", r#"""#]);
        assert_eq!(split(r#"x "a"""#), ["x", r#"a""#]);
    }

    #[test]
    fn empty_quoted_argument_is_kept() {
        assert_eq!(split(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(split(r#"x """#), ["x", ""]);
        assert_eq!(split(r#"x ""#), ["x", ""]);
    }

    #[test]
    fn blank_inside_unterminated_quote_is_literal() {
        assert_eq!(split(r#"x "a b"#), ["x", "a b"]);
    }
}
