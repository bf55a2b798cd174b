//! Every documented command runs: each `weir …` line of the README's shell blocks and each
//! example in every verb's `--help` is run, as written, against a real broker. A documented
//! command may be refused by the broker (a group or message it names does not exist here:
//! exit 2) but must never panic or fail to parse (clap's usage error, exit 1).
//!
//! The lines are taken apart as a shell would (quotes, `#` comments, `;`, `&`, `|`), and
//! rewritten only where they name this machine's resources: the broker address becomes the
//! test broker's, a `serve` listens on free ports in a directory of its own, `$(pgrep …)` is
//! the test broker's pid, `seq N |` feeds lines on stdin. Commands that run until stopped
//! (`serve`, `top`, `sub` without `--count`, `bench`) are judged on what they wrote before
//! [`RUNS_UNTIL_STOPPED`] and then killed. Also: every verb and sub-verb answers `--help`
//! with exit 0.

mod util;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::Weir;

/// How long a command may run before it counts as one that runs until stopped. Parsing the
/// command line and a first refusal take milliseconds; this is far above that.
const RUNS_UNTIL_STOPPED: Duration = Duration::from_secs(3);

/// Most lines fed to a command from a documented `seq N |`: how the command line parses does
/// not depend on how many there are.
const MAX_SEQ_LINES: u64 = 100;

/// One command of a shell line: its `NAME=value` prefixes, its words, and what a `seq N |`
/// before it would feed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Invocation {
    environment: Vec<(String, String)>,
    words: Vec<String>,
    stdin: Option<String>,
}

/// A word or operator of a shell line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `;`, `&`, `&&` or `||`: the end of a command.
    Separator,
    Pipe,
}

/// Splits a line as `sh` would, as far as documentation lines need: quotes, backslashes, a
/// comment from an unquoted `#` that starts a word, `$(…)` kept whole, and operators.
fn tokens(line: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut characters = line.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '\'' => {
                let text = word.get_or_insert_with(String::new);
                for quoted in characters.by_ref() {
                    if quoted == '\'' {
                        break;
                    }
                    text.push(quoted);
                }
            }
            '"' => {
                let text = word.get_or_insert_with(String::new);
                while let Some(quoted) = characters.next() {
                    match quoted {
                        '"' => break,
                        '\\' => text.extend(characters.next()),
                        _ => text.push(quoted),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(String::new)
                .extend(characters.next()),
            '$' if characters.peek() == Some(&'(') => {
                let text = word.get_or_insert_with(String::new);
                text.push('$');
                let mut depth = 0;
                for inner in characters.by_ref() {
                    text.push(inner);
                    match inner {
                        '(' => depth += 1,
                        ')' if depth == 1 => break,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
            '#' if word.is_none() => break,
            ' ' | '\t' => tokens.extend(word.take().map(Token::Word)),
            ';' | '&' | '|' => {
                tokens.extend(word.take().map(Token::Word));
                let doubled = characters.peek() == Some(&character);
                if doubled {
                    characters.next();
                }
                tokens.push(if character == '|' && !doubled {
                    Token::Pipe
                } else {
                    Token::Separator
                });
            }
            _ => word.get_or_insert_with(String::new).push(character),
        }
    }
    tokens.extend(word.map(Token::Word));
    tokens
}

/// The `weir` commands of one documentation line. `cargo run --release -- ARGS` is `weir ARGS`;
/// lines with no `weir` in them (`export PATH=…`, `./scripts/test`) give none.
fn weir_invocations(line: &str) -> Vec<Invocation> {
    let mut commands: Vec<Vec<Vec<String>>> = vec![vec![Vec::new()]];
    for token in tokens(line) {
        let pipeline = commands.last_mut().expect("one at least");
        match token {
            Token::Word(word) => pipeline.last_mut().expect("one at least").push(word),
            Token::Pipe => pipeline.push(Vec::new()),
            Token::Separator => commands.push(vec![Vec::new()]),
        }
    }
    let mut invocations = Vec::new();
    for pipeline in commands {
        let mut stdin = None;
        for stage in pipeline {
            let assignments = stage.iter().take_while(|word| is_assignment(word)).count();
            let (environment, words) = stage.split_at(assignments);
            let arguments = match words {
                [program, arguments @ ..] if program == "weir" => arguments,
                [cargo, run, rest @ ..] if cargo == "cargo" && run == "run" => {
                    match rest.iter().position(|word| word == "--") {
                        Some(dashes) => &rest[dashes + 1..],
                        None => continue,
                    }
                }
                [seq, count] if seq == "seq" => {
                    let count: u64 = count.parse().expect("seq takes a number");
                    stdin = Some(
                        (1..=count.min(MAX_SEQ_LINES))
                            .map(|number| format!("{number}\n"))
                            .collect(),
                    );
                    continue;
                }
                _ => continue,
            };
            invocations.push(Invocation {
                environment: environment
                    .iter()
                    .map(|assignment| {
                        let (name, value) = assignment.split_once('=').expect("an assignment");
                        (name.to_owned(), value.to_owned())
                    })
                    .collect(),
                words: arguments.to_vec(),
                stdin: stdin.take(),
            });
        }
    }
    invocations
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|character| character.is_ascii_uppercase() || character == '_')
    })
}

/// The lines of the README's ```sh blocks.
fn readme_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut lines = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        let trimmed = line.trim();
        if in_shell {
            if trimmed.starts_with("```") {
                in_shell = false;
            } else {
                lines.push(trimmed.to_owned());
            }
        } else if trimmed == "```sh" || trimmed == "```shell" || trimmed == "```bash" {
            in_shell = true;
        }
    }
    lines
}

/// The example lines of a `--help` text: the indented lines after an `Example:` or
/// `Examples:` heading (blank lines between them included), up to the first unindented line.
fn help_examples(help: &str) -> Vec<String> {
    let mut examples = Vec::new();
    let mut in_examples = false;
    for line in help.lines() {
        if matches!(line.trim_end(), "Example:" | "Examples:") {
            in_examples = true;
        } else if line.trim().is_empty() {
        } else if in_examples && line.starts_with("  ") {
            examples.push(line.trim().to_owned());
        } else {
            in_examples = false;
        }
    }
    examples
}

/// The sub-commands listed under `Commands:` in a help text, `help` excepted.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim_end() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The TOML keys `serve --help` documents, as a config file.
fn documented_config(serve_help: &str) -> String {
    serve_help
        .lines()
        .skip_while(|line| !line.starts_with("A config file holds"))
        .filter(|line| line.starts_with("  "))
        .map(|line| format!("{}\n", line.trim()))
        .collect()
}

/// What one run left behind.
struct Outcome {
    /// `None` when it was still running at [`RUNS_UNTIL_STOPPED`] (and was killed).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn weir_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("WEIR_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `weir ARGUMENTS`; one that has not finished after `patience` is killed.
fn run(mut command: Command, stdin: Option<&str>, patience: Duration) -> Outcome {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weir binary starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut pipe, input.as_bytes());
        });
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + patience;
    let code = loop {
        if let Some(status) = child.try_wait().expect("waiting for weir") {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// `invocation` made to run here: against `broker`, in `directory`, on free ports.
fn rewrite(invocation: &Invocation, broker: &Weir, directory: &Path) -> Command {
    let verb = invocation.words.first().map_or("", String::as_str);
    let mut words = Vec::new();
    let mut given = invocation.words.iter();
    while let Some(word) = given.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (word.as_str(), None),
        };
        let replacement = match flag {
            "--server" => Some(broker.address.to_string()),
            "--native-addr" | "--http-addr" => Some("127.0.0.1:0".to_owned()),
            "--data-dir" => Some(directory.join("data").display().to_string()),
            _ => None,
        };
        match replacement {
            Some(value) => {
                if inline.is_none() {
                    given.next();
                }
                words.push(flag.to_owned());
                words.push(value);
            }
            None if word.starts_with("$(") => {
                assert!(
                    word.contains("pgrep") && word.contains("weir"),
                    "no stand-in for the substitution {word}"
                );
                words.push(broker.pid().to_string());
            }
            None => words.push(word.clone()),
        }
    }
    if verb == "serve" {
        for flag in ["--native-addr", "--http-addr"] {
            if !words.iter().any(|word| word == flag) {
                words.push(flag.to_owned());
                words.push("127.0.0.1:0".to_owned());
            }
        }
    }
    let mut command = weir_command();
    command.current_dir(directory).args(&words);
    for (name, value) in &invocation.environment {
        command.env(name, value);
    }
    // Whatever server the line names, this one is the one running here.
    command.env("WEIR_SERVER", broker.address.to_string());
    command
}

/// Why `outcome` shows a documented command broken, if it does.
fn failure(outcome: &Outcome) -> Option<&'static str> {
    if outcome.stderr.contains("panicked") {
        return Some("it panicked");
    }
    if outcome.stderr.contains("Usage:") || outcome.stderr.contains("try '--help'") {
        return Some("its command line does not parse");
    }
    match outcome.code {
        // Still running: it parsed and started.
        None => None,
        Some(0) => None,
        // The broker refused: a name in the example does not exist on this broker.
        Some(2) => None,
        Some(3) => Some("it could not reach the broker (a rewriting the test lacks?)"),
        Some(_) => Some("it failed on its own"),
    }
}

/// Runs every documented line in order; returns the failures and how many commands ran.
fn run_lines(
    lines: &[(String, String)],
    broker: &Weir,
    config: &str,
    root: &Path,
) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (source, line) in lines {
        for invocation in weir_invocations(line) {
            ran += 1;
            let directory = root.join(format!("run-{ran}"));
            std::fs::create_dir_all(&directory).expect("a working directory");
            std::fs::write(directory.join("weir.toml"), config).expect("a config file");
            let outcome = run(
                rewrite(&invocation, broker, &directory),
                invocation.stdin.as_deref(),
                RUNS_UNTIL_STOPPED,
            );
            if let Some(reason) = failure(&outcome) {
                failures.push(format!(
                    "{source}: `{line}` ({:?}): {reason}; exit {:?}\nstdout:\n{}\nstderr:\n{}",
                    invocation.words, outcome.code, outcome.stdout, outcome.stderr
                ));
            }
        }
    }
    (failures, ran)
}

/// The help text of `weir WORDS --help`, asserting it exits 0.
fn help(words: &[&str]) -> String {
    let mut command = weir_command();
    command.args(words).arg("--help");
    let outcome = run(command, None, util::PATIENCE);
    assert_eq!(
        outcome.code,
        Some(0),
        "weir {} --help: stderr:\n{}",
        words.join(" "),
        outcome.stderr
    );
    outcome.stdout
}

/// Goal: a documented command can never crash or fail to parse again (issue 10, defect 1:
/// `weir sub … --retry-backoff 1s,5s,30s` panicked in clap). Method: run every `weir` line of
/// the README's shell blocks, then every example of every verb's and sub-verb's `--help`, in
/// order against one broker; each must finish with 0 or a broker refusal (2), or still be
/// running when stopped, and never print a panic or a usage error. Every verb's `--help`
/// exits 0 and every verb shows at least one example.
#[test]
fn every_documented_command_runs() {
    let broker = Weir::start();
    let root = tempfile::tempdir().expect("a temporary directory");
    let config = documented_config(&help(&["serve"]));
    assert!(
        config.contains("[[alert_rules]]"),
        "serve --help documents the config file:\n{config}"
    );

    let mut lines: Vec<(String, String)> = readme_lines()
        .into_iter()
        .map(|line| ("README.md".to_owned(), line))
        .collect();
    let readme_commands: usize = lines
        .iter()
        .map(|(_, line)| weir_invocations(line).len())
        .sum();
    assert!(
        readme_commands >= 15,
        "the README's shell blocks give {readme_commands} weir commands"
    );

    let top = help(&[]);
    lines.extend(
        help_examples(&top)
            .into_iter()
            .map(|line| ("weir --help".to_owned(), line)),
    );
    let verbs = subcommands(&top);
    assert!(verbs.len() >= 10, "weir --help lists its verbs:\n{top}");
    for verb in &verbs {
        let text = help(&[verb]);
        let mut examples = help_examples(&text);
        for sub_verb in subcommands(&text) {
            let sub_text = help(&[verb, &sub_verb]);
            examples.extend(help_examples(&sub_text));
        }
        assert!(
            examples
                .iter()
                .any(|line| !weir_invocations(line).is_empty()),
            "weir {verb} --help shows no example:\n{text}"
        );
        lines.extend(
            examples
                .into_iter()
                .map(|line| (format!("weir {verb} --help"), line)),
        );
    }

    let (failures, ran) = run_lines(&lines, &broker, &config, root.path());
    eprintln!("ran {ran} documented commands");
    assert!(
        failures.is_empty(),
        "{} of {ran} documented commands are broken:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn documentation_lines_split_as_a_shell_splits_them() {
    let invocations = weir_invocations(
        "seq 3 | weir pub orders --key 'a b' --header x=\"y z\"  # one message per line",
    );
    assert_eq!(
        invocations,
        [Invocation {
            environment: vec![],
            words: ["pub", "orders", "--key", "a b", "--header", "x=y z"]
                .map(str::to_owned)
                .to_vec(),
            stdin: Some("1\n2\n3\n".to_owned()),
        }]
    );
    let words = |line: &str| -> Vec<Vec<String>> {
        weir_invocations(line)
            .into_iter()
            .map(|invocation| invocation.words)
            .collect()
    };
    assert_eq!(
        words("weir dlq list; weir stats & weir top"),
        [vec!["dlq", "list"], vec!["stats"], vec!["top"]]
    );
    assert_eq!(
        words("weir exchange bind orders all --key 'order.#'"),
        [vec![
            "exchange", "bind", "orders", "all", "--key", "order.#"
        ]]
    );
    assert_eq!(
        words("weir topic list --json | jq -r '.[].name'"),
        [vec!["topic", "list", "--json"]]
    );
    assert_eq!(
        words("cargo run --release -- serve &   # the broker"),
        [vec!["serve"]]
    );
    assert_eq!(
        words("weir bench --server-pid $(pgrep -n weir)"),
        [vec!["bench", "--server-pid", "$(pgrep -n weir)"]]
    );
    assert!(words("export PATH=\"$PWD/target/release:$PATH\"").is_empty());
    let top = weir_invocations("WEIR_SERVER=broker-1:5680 weir top");
    assert_eq!(
        top[0].environment,
        [("WEIR_SERVER".to_owned(), "broker-1:5680".to_owned())]
    );
    assert_eq!(
        help_examples(
            "Usage: x\n\nExamples:\n  weir a\n  weir b   # c\n\n  weir d\nprose\n  e = 1\n"
        ),
        ["weir a", "weir b   # c", "weir d"]
    );
}
