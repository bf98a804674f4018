//! Work shared out over the machine's cores.

/// `f` of each item, in order, worked out on as many scoped threads as there are cores, each
/// taking a contiguous part of `items`.
pub fn map_on_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("a worker thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::map_on_cores;

    #[test]
    fn work_shared_over_the_cores_comes_back_in_order() {
        let items: Vec<u64> = (0..1001).collect();
        let doubled = map_on_cores(&items, |x| x * 2);
        assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(map_on_cores(&[] as &[u64], |x| *x).is_empty());
        assert_eq!(map_on_cores(&[7u64], |x| x + 1), [8]);
    }
}
