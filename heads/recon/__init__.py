"""What ``pixio recon3d`` does with the point-map model's predictions: cameras, depth from the images, fusion,
outputs. The data path, module by module (docs/development.md draws it): frames -> :mod:`views` (decoded at
the processing size, named; what is known of them: :mod:`known_cameras`, :mod:`known_depth`,
:mod:`known_poses`) -> :mod:`sfm_job` / :mod:`sfm` (cameras from matching, on a thread beside the network) ->
the network (:mod:`heads.pointmap`) in :mod:`chunks` -> :mod:`placement` (its depth placed on the cameras,
:mod:`depth_fit`; :mod:`depth_poses` with measured depth) -> :mod:`cleaning`, :mod:`mvs` and :mod:`fusion`
(depth from the images, checked across views) -> :mod:`preview`, :mod:`mesh` and :mod:`scene_files` (the
files written). :mod:`pipeline` runs the steps up to the placement, :mod:`outputs` the rest.

Words used with one meaning throughout:

view
    One input frame at the processing size, as the network saw it; views are indexed ``v`` in ``(V, H, W)``
    arrays.
processing size
    The (H, W) the network runs at (short side 384 for MapAnything's model); depth maps, rays and masks are
    at this size. The original size is the frame's own; COLMAP's images are the *written* size.
camera-to-world (``cam2world``)
    A (4, 4) pose taking camera coordinates (OpenCV axes: x right, y down, z forward) to the world's.
K
    The pinhole part of a camera, (3, 3), in the pixels of the image it is given for; pixel centres at
    integer coordinates.
rays
    Each pixel's normalised coordinates x/z, y/z in its camera (through the camera's own model, distortion
    included).
depth
    z-depth along the camera's axis (not the distance along the ray), in the scene's units.
track
    A 3-D point COLMAP triangulated from matched keypoints, with the views that saw it.
measured
    A pixel (or view) whose depth a sensor recorded (``--known-depth``, an RGB-D folder): kept as recorded,
    never moved by matching. (``held`` is kept for a focal length held at its prior, in :mod:`focal`.)
matched
    A pixel whose depth multi-view stereo found from the images (:mod:`mvs`), as against one the prior
    (the network's depth) filled in.
valid
    A pixel that has a usable depth at this step (finite, in front of its camera, not cleaned away).
known cameras
    Cameras the user gives (``--known-cameras``, or an RGB-D layout's recorded poses): no mapping
    (:mod:`known_cameras`).
"""
