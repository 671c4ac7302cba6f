//! Splitting a Windows command line into arguments with the rules of `CommandLineToArgvW`.
//!
//! HCS receives a single `CommandLine` string; on Windows the guest's C runtime (or
//! `CommandLineToArgvW`) splits it. The host backend of the simulator runs Unix programs, so it
//! splits the string itself with the same rules (as documented by Microsoft for
//! `CommandLineToArgvW` and implemented by Rust's `std` on Windows):
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

/// Splits `line` with the `CommandLineToArgvW` rules. An empty (or all-blank) line gives an
/// empty vector.
///
/// ```
/// use hcs_sim::cmdline::split_command_line;
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

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests {
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
