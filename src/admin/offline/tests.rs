use super::*;

/// Long lines: a batch stops once it holds [`BATCH_BYTES`], so the
/// batches in flight hold a bounded amount of the file, not
/// [`BATCH_LINES`] of its longest lines each; every non-blank line is
/// still read once, in order, with its number.
#[test]
fn batches_of_long_lines_are_bounded_by_bytes() {
    let line = |n: usize| format!("{n}:{}", "x".repeat(64 * 1024));
    let mut file = String::new();
    for n in 1..=300 {
        file.push_str(&line(n));
        file.push_str(if n % 7 == 0 { "\r\n\n" } else { "\n" });
    }
    let mut reader = file.as_bytes();
    let (mut line_no, mut seen, mut batches) = (0u64, Vec::new(), 0);
    while let Some(batch) = read_batch(&mut reader, &mut line_no, MAX_LINE_BYTES).unwrap() {
        batches += 1;
        let longest = batch.lines().map(|(_, l)| l.len()).max().unwrap();
        assert!(
            batch.text.len() < BATCH_BYTES + longest,
            "a batch of {} lines holds {} bytes",
            batch.lines.len(),
            batch.text.len()
        );
        seen.extend(batch.lines().map(|(no, l)| (no, l.to_string())));
    }
    assert!(batches > 2, "{batches} batches");
    let mut want = Vec::new();
    let mut no = 0;
    for n in 1..=300 {
        no += 1;
        want.push((no, line(n)));
        if n % 7 == 0 {
            no += 1; // the blank line after it
        }
    }
    assert_eq!(seen, want);
}

/// A line longer than the bound is refused, with its number, once the
/// bound is read (not the whole line); lines up to the bound, with or
/// without their `\n` or `\r\n`, are taken.
#[test]
fn a_line_longer_than_the_bound_is_refused() {
    let max = 64;
    let fits = format!(
        "{}\r\n{}\n{}",
        "a".repeat(max - 1),
        "b".repeat(max - 1),
        "c".repeat(max)
    );
    let mut reader = fits.as_bytes();
    let mut line_no = 0;
    let batch = read_batch(&mut reader, &mut line_no, max).unwrap().unwrap();
    let lengths: Vec<usize> = batch.lines().map(|(_, l)| l.len()).collect();
    assert_eq!(lengths, [max - 1, max - 1, max]);

    let long = format!("{{}}\n\n{}\n{{}}\n", "x".repeat(10 * max));
    let mut reader = long.as_bytes();
    let mut line_no = 0;
    let err = read_batch(&mut reader, &mut line_no, max)
        .map(|_| ())
        .unwrap_err();
    assert!(err.starts_with("line 3 is longer than 64 bytes"), "{err}");
    assert_eq!(
        reader.len(),
        long.len() - 4 - (max + 3),
        "reading stopped just past the bound"
    );
    // Cut inside a two-byte character: still too long, not "not UTF-8".
    let accents = format!("{{}}\n{}\n", "é".repeat(10 * max));
    let mut reader = accents.as_bytes();
    let mut line_no = 0;
    let err = read_batch(&mut reader, &mut line_no, max)
        .map(|_| ())
        .unwrap_err();
    assert!(err.starts_with("line 2 is longer than 64 bytes"), "{err}");
}

/// Short lines still fill a batch to [`BATCH_LINES`].
#[test]
fn batches_of_short_lines_hold_batch_lines() {
    let file = "{}\n".repeat(BATCH_LINES + 3);
    let mut reader = file.as_bytes();
    let mut line_no = 0;
    let first = read_batch(&mut reader, &mut line_no, MAX_LINE_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(first.lines.len(), BATCH_LINES);
    let second = read_batch(&mut reader, &mut line_no, MAX_LINE_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(second.lines.len(), 3);
    assert!(
        read_batch(&mut reader, &mut line_no, MAX_LINE_BYTES)
            .unwrap()
            .is_none()
    );
}

/// Only empty lines are skipped: a line of whitespace, ASCII or not, is
/// read as a line (and then refused as an event), never dropped unseen.
#[test]
fn only_empty_lines_are_skipped() {
    let file = "a\n\n\r\n \n\t\n\u{a0}\n\u{2028}\n\u{3000}\nb\n";
    let mut reader = file.as_bytes();
    let mut line_no = 0;
    let batch = read_batch(&mut reader, &mut line_no, MAX_LINE_BYTES)
        .unwrap()
        .unwrap();
    let lines: Vec<(u64, &str)> = batch.lines().collect();
    assert_eq!(
        lines,
        [
            (1, "a"),
            (4, " "),
            (5, "\t"),
            (6, "\u{a0}"),
            (7, "\u{2028}"),
            (8, "\u{3000}"),
            (9, "b")
        ]
    );
}
