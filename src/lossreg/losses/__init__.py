"""Loss functions: classification (task 'cls') and regression (task 'reg'). Each file registers its own entries."""
