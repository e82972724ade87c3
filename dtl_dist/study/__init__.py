"""The paper's experiment (Shen et al. 2022, Fig. 2): the study of one site (``run``), its stages, models and
outputs, the report and ``dtl predict``; also the stages behind ``dtl rslocal`` and ``dtl tune``."""
