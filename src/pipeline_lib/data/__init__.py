"""Data: dataset readers (Fashion-MNIST, class-folder trees), streaming, forget/retain splits and the tasks' masks."""
