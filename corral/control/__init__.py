"""Control: the colocation feedback loop and memory offloading decisions."""
