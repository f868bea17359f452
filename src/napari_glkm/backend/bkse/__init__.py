"""BKSE: encoded blur-kernel space (Tran et al., CVPR 2021)."""
