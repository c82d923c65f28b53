"""Write tests/data/mapanything_geometric_inputs.npz: what MapAnything's own code makes of known poses and depth
before its encoders (relative quaternions, normalised translations and their scale, normalised log depth and
its scale), for fixed inputs, so a test can hold heads.pointmap.model's pose_inputs and depth_inputs to it without
MapAnything's code. Run with the reference venv (../shared/tools/reference_env.sh):

    PY MA = $(../shared/tools/reference_env.sh); $PY scripts/mapanything_inputs_fixture.py $MA OUT.npz
"""

import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from mapanything.utils.geometry import (apply_log_to_norm, normalize_depth_using_non_zero_pixels,  # noqa: E402
                                        normalize_pose_translations, rotation_matrix_to_quaternion,
                                        transform_pose_using_quats_and_trans_2_to_1)

g = torch.Generator().manual_seed(0)
B, V = 2, 4
R = torch.linalg.qr(torch.randn(B, V, 3, 3, generator=g))[0]
R = R * torch.det(R).sign()[..., None, None]  # rotations, not reflections
cam2world = torch.eye(4).repeat(B, V, 1, 1)
cam2world[..., :3, :3] = R
cam2world[..., :3, 3] = torch.randn(B, V, 3, generator=g) * 2
quats = rotation_matrix_to_quaternion(cam2world[..., :3, :3])  # as infer() does
rel_q = torch.stack([transform_pose_using_quats_and_trans_2_to_1(quats[:, 0], cam2world[:, 0, :3, 3], quats[:, v],
                                                                 cam2world[:, v, :3, 3])[0] for v in range(V)], 1)
rel_t = torch.stack([transform_pose_using_quats_and_trans_2_to_1(quats[:, 0], cam2world[:, 0, :3, 3], quats[:, v],
                                                                 cam2world[:, v, :3, 3])[1] for v in range(V)], 1)
t_norm, factor = normalize_pose_translations(rel_t, return_norm_factor=True)

depth = torch.rand(3, 12, 16, 1, generator=g) * 4 + 0.5
depth[depth < 1.0] = 0.0  # unknown pixels
depth[2] = 0.0  # a view with no depth at all
d_norm, d_factor = normalize_depth_using_non_zero_pixels(depth, return_norm_factor=True)
log_depth = apply_log_to_norm(d_norm)
np.savez(sys.argv[2], cam2world=cam2world.numpy(), rel_q=rel_q.numpy(), rel_t=t_norm.numpy(),
         log_pose_factor=torch.log(factor + 1e-8).numpy(), depth=depth[..., 0].numpy(),
         log_depth=log_depth[..., 0].numpy(), log_depth_factor=torch.log(d_factor + 1e-8).numpy())
print("written", sys.argv[2])
