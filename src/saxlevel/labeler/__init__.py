"""`saxlevel label`: the paper's matplotlib slice labeler (section 2.2), made fast and heart-centred.

One subject per screen: its ED stack above its ES stack, slices apex->base, each cropped around the
heart (the region that moves between ED and ES; a right-click sets the centre by hand).

Keys: 1-5 choose the class (oap, ap, mid, bs, obs); a click labels a slice with it; b toggles boundary
mode (a click sets where the chosen level starts in that row and the row is filled in: levels never go
backwards from apex to base); a accepts the model's labels for every unlabelled slice of the subject;
c copies ED's labels to ES; z undoes (many steps); f toggles heart view / full field of view;
up/down brighten/darken, +/- raise/lower contrast, 0 resets; left/right move between subjects, h/l jump
by 10; space saves; ? shows this help. Labels autosave every few changes and on every subject change,
atomically, with a timestamped backup of the previous file; each label records who and when; on start
the file is reloaded and labelling resumes at the first subject with an unlabelled slice.

Speed: every image is read from disk once per subject and cached; an event redraws only what it changed
(one slice's label, the status line) with blitting, so typing ahead never lags behind the labels.
"""

from saxlevel.labeler.session import Session, heart_centre, levels_from_starts, uncertainty_order
from saxlevel.labeler.window import Labeler, main

__all__ = ["Labeler", "Session", "heart_centre", "levels_from_starts", "main", "uncertainty_order"]
