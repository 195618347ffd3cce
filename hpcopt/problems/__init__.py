"""Problems: the physics (or test function) being optimised."""
