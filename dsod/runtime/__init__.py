"""How a network runs: precision, layout and the speed paths, behind one seam."""
