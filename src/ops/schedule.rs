//! Running per-module work in parallel with good load balance: modules differ in cost by two
//! orders of magnitude (an SDXL feed-forward vs a text-encoder projection), and rayon's default
//! splitting can leave one core finishing a big module alone at the end. Largest first, one
//! task per module, is the classic LPT schedule.

use rayon::prelude::*;

/// `items.map(f)` in parallel, results in input order, largest `cost` started first.
pub(crate) fn par_map_largest_first<T: Sync, R: Send>(
    items: &[T],
    cost: impl Fn(&T) -> usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost(&items[i])));
    let mut done: Vec<(usize, R)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&i| (i, f(&items[i])))
        .collect();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_input_order() {
        let items: Vec<usize> = (0..1000).map(|i| (i * 7919) % 1013).collect();
        let out = par_map_largest_first(&items, |&x| x, |&x| x * 2);
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }
}
