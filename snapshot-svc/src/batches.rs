//! Batching as the seed did it: projects sorted by volume count (ascending, stable), a project with
//! at least `batch_size` volumes alone in its batch, smaller ones packed together up to
//! `batch_size`; a project's volumes are never split across batches.

/// A group of whole projects processed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indexes into the caller's project list, in batch order.
    pub projects: Vec<usize>,
    /// Volumes of those projects.
    pub volumes: usize,
}

/// Groups `volume_counts` (one entry per project, in first-appearance order) into batches.
pub fn group(volume_counts: &[usize], batch_size: usize) -> Vec<Plan> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..volume_counts.len()).collect();
    order.sort_by_key(|&i| volume_counts[i]);
    let mut batches = Vec::new();
    let mut current = Plan { projects: Vec::new(), volumes: 0 };
    for project in order {
        let count = volume_counts[project];
        if count >= batch_size {
            if !current.projects.is_empty() {
                batches.push(std::mem::replace(&mut current, Plan { projects: Vec::new(), volumes: 0 }));
            }
            batches.push(Plan { projects: vec![project], volumes: count });
            continue;
        }
        if current.volumes + count > batch_size && !current.projects.is_empty() {
            batches.push(std::mem::replace(&mut current, Plan { projects: Vec::new(), volumes: 0 }));
        }
        current.projects.push(project);
        current.volumes += count;
    }
    if !current.projects.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_projects_are_packed_and_big_ones_stand_alone() {
        // Projects 0..4 with 3, 25, 8, 10, 2 volumes; batch size 20.
        let batches = group(&[3, 25, 8, 10, 2], 20);
        let shape: Vec<(Vec<usize>, usize)> = batches.into_iter().map(|b| (b.projects, b.volumes)).collect();
        assert_eq!(shape, [(vec![4, 0, 2], 13), (vec![3], 10), (vec![1], 25)]);
    }

    #[test]
    fn a_project_is_never_split_and_every_project_appears_once() {
        let counts: Vec<usize> = (0..50).map(|i| (i * 7) % 23).collect();
        let batches = group(&counts, 20);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.projects.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        for batch in &batches {
            assert_eq!(batch.volumes, batch.projects.iter().map(|&p| counts[p]).sum::<usize>());
            assert!(batch.volumes <= 20 || batch.projects.len() == 1);
        }
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(group(&[], 20).is_empty());
        assert_eq!(group(&[1], 0).len(), 1);
    }
}
