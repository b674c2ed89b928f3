//! Work on every core, results in order: the shape of a verification walk.
//!
//! One thread (the caller) reads batches in order and hands each to a
//! worker thread; the workers do the expensive part (decoding, hashing) at
//! the same time; the caller takes the results back in the order it read
//! the batches and walks them. Batch `i` goes to worker `i % threads` and
//! each worker answers in the order it was given work, so receiving from
//! the workers in turn restores the reading order without sorting.
//!
//! The workers live for the whole run (no thread per batch), and at most
//! `threads × IN_FLIGHT_PER_THREAD` batches are out at once, so memory
//! stays bounded however long the input is.

use std::ops::ControlFlow;
use std::sync::mpsc;

/// Batches handed to one worker and not yet taken back: enough that a
/// worker never waits for the reader while the walk catches up.
const IN_FLIGHT_PER_THREAD: usize = 3;

/// Reads batches with `read` (until `Ok(None)`), runs `work` on each on one
/// of `threads` worker threads, and gives every result to `take` in reading
/// order. Stops at the first error of `read` or `take` (returned), or when
/// `take` breaks. `read` and `take` run on the calling thread.
pub fn run_in_order<B, R, E>(
    threads: usize,
    read: impl FnMut() -> Result<Option<B>, E>,
    work: impl Fn(B) -> R + Sync,
    take: impl FnMut(R) -> Result<ControlFlow<()>, E>,
) -> Result<(), E>
where
    B: Send,
    R: Send,
{
    run_in_order_bounded(threads, usize::MAX, |_| 0, read, work, take)
}

/// [`run_in_order`], with the batches out at once also bounded by their
/// total `size`: no batch is read while those out add up to `max_size` or
/// more, unless none is out. So the memory held is at most `max_size` plus
/// one batch, whatever the thread count, when batches can be large.
pub fn run_in_order_bounded<B, R, E>(
    threads: usize,
    max_size: usize,
    size: impl Fn(&B) -> usize,
    mut read: impl FnMut() -> Result<Option<B>, E>,
    work: impl Fn(B) -> R + Sync,
    mut take: impl FnMut(R) -> Result<ControlFlow<()>, E>,
) -> Result<(), E>
where
    B: Send,
    R: Send,
{
    let threads = threads.max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let mut to_workers = Vec::with_capacity(threads);
        let mut from_workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (batches, inbox) = mpsc::channel::<B>();
            let (results, outbox) = mpsc::channel::<R>();
            scope.spawn(move || {
                for batch in inbox {
                    // The caller stopped early: nobody takes this result.
                    if results.send(work(batch)).is_err() {
                        break;
                    }
                }
            });
            to_workers.push(batches);
            from_workers.push(outbox);
        }
        let limit = threads * IN_FLIGHT_PER_THREAD;
        let (mut sent, mut taken, mut done) = (0usize, 0usize, false);
        // The size of each batch out, oldest first, and their sum.
        let mut out_sizes = std::collections::VecDeque::with_capacity(limit);
        let mut out_size = 0usize;
        loop {
            while !done && sent - taken < limit && (out_size < max_size || sent == taken) {
                match read()? {
                    Some(batch) => {
                        let batch_size = size(&batch);
                        out_sizes.push_back(batch_size);
                        out_size = out_size.saturating_add(batch_size);
                        to_workers[sent % threads]
                            .send(batch)
                            .expect("a worker lives until its inbox closes");
                        sent += 1;
                    }
                    None => done = true,
                }
            }
            if taken == sent {
                return Ok(());
            }
            // A worker that panicked drops its sender: the panic is the
            // error, and the scope re-raises it when it joins.
            let result = from_workers[taken % threads]
                .recv()
                .expect("a worker answers every batch unless it panicked");
            taken += 1;
            let batch_size = out_sizes.pop_front().expect("one size per batch out");
            out_size -= batch_size;
            if take(result)?.is_break() {
                return Ok(());
            }
        }
        // Returning drops the senders: every worker ends its loop, and the
        // scope joins them.
    })
}

/// The threads a run should use: every core the process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uneven work (later batches are faster) still comes back in order,
    /// whatever the thread count.
    #[test]
    fn results_come_back_in_reading_order() {
        for threads in [1, 2, 3, 8] {
            let mut next = 0u64;
            let mut seen = Vec::new();
            let read = || -> Result<Option<u64>, ()> {
                next += 1;
                Ok((next <= 100).then_some(next))
            };
            let work = |n: u64| {
                std::thread::sleep(std::time::Duration::from_micros(200 - 2 * n));
                n * n
            };
            run_in_order(threads, read, work, |r| {
                seen.push(r);
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
            let want: Vec<u64> = (1..=100).map(|n| n * n).collect();
            assert_eq!(seen, want, "{threads} threads");
        }
    }

    /// Large batches: never more out at once than fit in the size bound,
    /// but always one, even one larger than the bound; every batch is
    /// still taken, in order.
    #[test]
    fn the_size_bound_limits_the_batches_out() {
        let read_count = std::cell::Cell::new(0usize);
        let mut taken = Vec::new();
        let mut most_out = 0;
        let sizes = [10usize, 10, 10, 10, 100, 10, 10, 10];
        run_in_order_bounded(
            4,
            25,
            |&(_, size): &(usize, usize)| size,
            || -> Result<Option<(usize, usize)>, ()> {
                let n = read_count.get();
                let next = sizes.get(n).map(|&size| (n, size));
                read_count.set(n + usize::from(next.is_some()));
                Ok(next)
            },
            |batch| batch.0,
            |n| {
                most_out = most_out.max(read_count.get() - taken.len());
                taken.push(n);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
        assert_eq!(taken, (0..sizes.len()).collect::<Vec<_>>());
        assert_eq!(most_out, 3, "three batches of 10 reach the bound of 25");
    }

    /// A break stops reading soon (at most the batches in flight are read
    /// past it), and an error of `read` or `take` is returned.
    #[test]
    fn a_break_or_an_error_stops_the_run() {
        let mut read_count = 0usize;
        let mut taken = Vec::new();
        run_in_order(
            2,
            || -> Result<Option<usize>, String> {
                read_count += 1;
                Ok(Some(read_count))
            },
            |n| n,
            |n| {
                taken.push(n);
                Ok(if n == 10 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )
        .unwrap();
        assert_eq!(taken, (1..=10).collect::<Vec<_>>());
        assert!(read_count <= 10 + 2 * IN_FLIGHT_PER_THREAD, "{read_count}");

        let mut n = 0;
        let read_fails = run_in_order(
            2,
            || {
                n += 1;
                if n == 5 { Err("read 5") } else { Ok(Some(n)) }
            },
            |n| n,
            |_| Ok(ControlFlow::Continue(())),
        );
        assert_eq!(read_fails, Err("read 5"));
        let take_fails = run_in_order(
            2,
            {
                let mut n = 0;
                move || {
                    n += 1;
                    Ok(Some(n))
                }
            },
            |n| n,
            |n| {
                if n == 7 {
                    Err(n)
                } else {
                    Ok(ControlFlow::Continue(()))
                }
            },
        );
        assert_eq!(take_fails, Err(7));
    }
}
