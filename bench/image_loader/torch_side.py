"""bench/image_loader/torch_side.py: one epoch of torchvision's ImageFolder +
DataLoader over DIR with timm's training transform (batch 64, THREADS: 1 =
num_workers 0 and one torch thread, else that many worker processes); prints
a row of run.sh's table."""
import os
import time

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

threads, size = int(os.environ['THREADS']), int(os.environ['IMG_SIZE'])
torch.set_num_threads(1)
tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
ld = DataLoader(ImageFolder(os.environ['DIR'], tf), batch_size=64, shuffle=True,
                num_workers=0 if threads == 1 else threads)
n, t0 = 0, time.perf_counter()
for x, y in ld:
    n += x.shape[0]
s = time.perf_counter() - t0
print('%-7s %7d %8d %10.2f %14.1f' % ('torch', threads, n, s, n / s / threads))
