"""What patterns are used for, on top of the engine and the methods.

- :mod:`~patternscope.analyses.classwise`: class-wise patterns (Zhao et al. 2021): a small stamp per class,
  its predictive power and the smallest stamp that reaches a success rate;
- :mod:`~patternscope.analyses.additive`: the smallest-norm universal additive pattern towards a class (the
  scan's second signal);
- :mod:`~patternscope.analyses.scan`: the backdoor scan built on both, deciding with
  :mod:`~patternscope.analyses.scan_decision` (a null fitted on clean models) or the MAD rule of
  :mod:`~patternscope.analyses.anomaly`;
- :mod:`~patternscope.analyses.neural_cleanse`: Neural Cleanse (Wang et al. 2019), the scan's baseline;
- :mod:`~patternscope.analyses.downstream`: does a backbone's pattern fool a model fine-tuned from it?
- :mod:`~patternscope.analyses.hardening`: universal adversarial training against a model's own patterns.
"""
