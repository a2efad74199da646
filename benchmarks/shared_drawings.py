"""Reviewed lists of pictures in the packaged collections that are one drawing filed twice.

``groups.csv`` families merge what their rules can see (names, folders, symbol sets, identical or turned
thumbnails; for emoji also code points). A collection meant to hold *no* near-duplicates, such as the
dedup benchmark's base (docs/dedup.md), also needs the pairs those rules cannot see: one drawing under two
names, with another label or emblem, in another colour, mirrored or cropped. These lists are such pairs,
reviewed by eye, and :func:`unrelated_subset` keeps a collection free of them.

How they were made (2026-11-23, before any benchmark run that uses them): the family representatives
(the first file of each ``groups.csv`` family, the only files the dedup benchmark draws its base from:
2,002 openclipart pictures, 1,288 emoji) were searched against each other. Every pair with SSCD cosine
>= 0.75 among the 10 nearest neighbours, or linked by ``diffrep dedup`` at its defaults, was shown side by
side at thumbnail size and labelled, and every pair labelled distinct was looked at again at 170 px
(openclipart: 123 + 16 links, 127 distinct pairs; emoji: 205, of which 177 are not
already kept apart by the emoji name rule, ``emoji_relations.unrelated_subset``).

*Related* (listed): one picture is the other up to the edits the benchmark injects (resize, pad, crop,
recolour, mirror, blur, JPEG, text) or a small local change with the rest of the drawing identical: a label,
digit or word changed (the RSS / XML button, keycaps), an emblem or small element added, removed or replaced
(a folder's star or heart, a hat, a halo, a mouth), a sign drawn on the blank triangle it is made of.
*Distinct* (not listed): a part redrawn (a face's expression, a box's flaps, a moon's lit part, a padlock's
shackle), another pictogram in a shared frame (warning triangles, prohibition circles, media buttons),
other drawings in one style (chess pieces, man and woman pictograms, knots). Openclipart: 63 related, 64
distinct (two "pictures", a duck and a penguin, are the same broken-link placeholder); emoji: 45 related,
132 distinct (most of them faces with other expressions). The second look changed two labels: the
bamboo pictures (one drawing, cropped) and the grinning cat with and without tears, both to related.
When dedup began to leave text lines out of its scores (``matching/textlines.py``), it was run on the
representatives again and its new links reviewed the same way: none new on openclipart; on emoji one pair
not already kept apart by the name rule, the speech balloon and the left speech bubble (the balloon
without its three dots), related: emoji 46 related.
The full review, distinct pairs included: ``benchmarks/shared_drawings_review.json``.
"""
from __future__ import annotations

from typing import Iterable

OPENCLIPART: tuple[tuple[str, str], ...] = (
    ("animals/birds/duck_yellow_ii_kurt_cagl_.png", "animals/birds/penguin/tux_didier_fabert_01.png"),
    ("animals/mammals/housecats/sleeping_cat_rgolan_sup_r.png", "animals/mammals/housecats/sleeping_cat_ron_golan_01.png"),
    ("animals/mammals/monkey_head_nicu_buculei_01.png", "animals/sailor_monkey_nicu_bucul_01.png"),
    ("buildings/homes/pinkhome-simple.png", "buildings/homes/pinkhome.png"),
    ("computer/bb_cd_.png", "computer/bb_dvd_.png"),
    ("computer/bb_fldr_.png", "computer/bb_fldr_fav_.png"),
    ("computer/bb_fldr_.png", "computer/bb_fldr_my_.png"),
    ("computer/bb_fldr_fav_.png", "computer/bb_fldr_my_.png"),
    ("computer/floppy_architetto_france_01.png", "computer/floppy_disk_architetto_f_01.png"),
    ("computer/gateway_andy_fitzsimon_r.png", "computer/router_andy_fitzsimon_r.png"),
    ("computer/icons/digital_camera_nikon_co_.png", "computer/icons/nikon_coolpix_auban_.png"),
    ("computer/icons/foglio_e_mondo_architett_01.png", "science/astronomy/mondo_architetto_frances_01.png"),
    ("computer/icons/hotel_icon_cycling_geral_01.png", "computer/icons/hotel_icon_mountain_bik_01.png"),
    ("computer/icons/hotel_icon_email_access_01.png", "computer/icons/hotel_icon_web_access_ge_01.png"),
    ("computer/icons/hotel_icon_in_room_emai_01.png", "computer/icons/hotel_icon_in_room_web__01.png"),
    ("computer/icons/hotel_icon_in_room_web__01.png", "computer/icons/hotel_icon_web_access_ge_01.png"),
    ("computer/icons/hotel_icon_indoor_parki_01.png", "computer/icons/hotel_icon_parking_avai_01.png"),
    ("computer/icons/hotel_icon_indoor_pool_g_01.png", "computer/icons/hotel_icon_swimming_poo_01.png"),
    ("computer/icons/hotel_icon_racquetball_g_01.png", "computer/icons/hotel_icon_squash_gerald_01.png"),
    ("computer/icons/load_cedric_bosdonnat_01.png", "computer/icons/save_cedric_bosdonnat_01.png"),
    ("containers/out_of_the_box_nicu_bucu_01.png", "office/open_box_nicu_buculei_01.png"),
    ("decorations/left_bottom_corner_trib_.png", "decorations/right_bottom_corner_tri_.png"),
    ("education/books/books-aj.svg_aj_ashton_01.png", "education/books/help-books-aj.svg_aj_ash_01.png"),
    ("food/beverages/milk_bw.png", "food/beverages/milk_ganson.png"),
    ("food/fruit/lemon_whole_ganson.png", "food/fruit/lime_whole_ganson.png"),
    ("food/meats_and_eggs/chicken_burger.png", "food/meats_and_eggs/hamburger_ganson.png"),
    ("geography/astronomy/03_firstquarter_opencli_01.png", "geography/astronomy/07_lastquarter_openclip_01.png"),
    ("office/pin_-_blue_nicu_buculei_01.png", "office/pin_-_yellow_nicu_bucule_01.png"),
    ("people/adult_astrid_graeber_01.png", "people/boy_astrid_graeber_.png"),
    ("people/boy_symbol_01_01.png", "people/symbolic_boy_hans_derago_01.png"),
    ("people/clothing/hats/bejewelled_crown_with_t_01.png", "people/clothing/hats/simple_crown_with_three_01.png"),
    ("people/clothing/hats/simple_crown_with_one_r_01.png", "people/clothing/hats/simple_crown_with_three_01.png"),
    ("plants/bamboo_01.png", "plants/bamboo_danny_allen_r.png"),
    ("recreation/games/cards/as_carreau_jean_victor_b_.png", "signs_and_symbols/card_figures_-_diamond_01.png"),
    ("recreation/games/cards/bordered/bordered_jk_b.png", "recreation/games/cards/ornamental/ornamental_jk_b.png"),
    ("recreation/music/double_croche_jean-victo_01.png", "recreation/music/simple_croche_jean-victo_01.png"),
    ("recreation/toys/rubik_s_cube_petri_lumme_01.png", "recreation/toys/rubik_s_cube_random_petr_01.png"),
    ("science/provetta_plasma_sangue_a_01.png", "unsorted/provetta.png"),
    ("shapes/cfbulb_lit_benji_park_.png", "shapes/cfbulb_notlit_benji_park_.png"),
    ("signs_and_symbols/BasseTemperature.png", "signs_and_symbols/low_temperature_yves_gui_01.png"),
    ("signs_and_symbols/ChampMagnetiqueImportant.png", "signs_and_symbols/magnetic_field_yves_guil_01.png"),
    ("signs_and_symbols/ChargesSuspendues.png", "signs_and_symbols/charge_lourde_yves_guill_01.png"),
    ("signs_and_symbols/DangerGeneral.png", "signs_and_symbols/danger_general_yves_guil_01.png"),
    ("signs_and_symbols/RadiationsIonisantes.png", "signs_and_symbols/radiations_ionisantes_yv_01.png"),
    ("signs_and_symbols/RadiationsNonIonisantes.png", "signs_and_symbols/radiations_non_ionisant_01.png"),
    ("signs_and_symbols/VehiculesManutention.png", "signs_and_symbols/vehicules_manutention_yv_01.png"),
    ("signs_and_symbols/charge_lourde_yves_guill_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/cloud_jon_phillips_01.png", "signs_and_symbols/thought_cloud_jon_philli_01.png"),
    ("signs_and_symbols/danger_general_yves_guil_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/danger_lectrique_yves_gu_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/ex_yves_guillou_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/half_star_rating_saurabh_01.png", "signs_and_symbols/one_and_a_half_star_rat_01.png"),
    ("signs_and_symbols/keep_tidy_empty_01.png", "signs_and_symbols/keep_tidy_inside_01.png"),
    ("signs_and_symbols/magnetic_field_yves_guil_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/one_and_a_half_star_rat_01.png", "signs_and_symbols/one_star_rating_saurabh__01.png"),
    ("signs_and_symbols/one_and_a_half_star_rat_01.png", "signs_and_symbols/two_and_a_half_star_rat_01.png"),
    ("signs_and_symbols/one_and_a_half_star_rat_01.png", "signs_and_symbols/two_star_rating_saurabh__01.png"),
    ("signs_and_symbols/one_star_rating_saurabh__01.png", "signs_and_symbols/two_star_rating_saurabh__01.png"),
    ("signs_and_symbols/radiations_ionisantes_yv_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/radiations_non_ionisant_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("signs_and_symbols/simbolo_emergenza_sanit_01.png", "unsorted/Simbol_medicina.png"),
    ("signs_and_symbols/triangle_yves_guillou_01.png", "signs_and_symbols/vehicules_manutention_yv_01.png"),
    ("signs_and_symbols/two_and_a_half_star_rat_01.png", "signs_and_symbols/two_star_rating_saurabh__01.png"),
)

EMOJI: tuple[tuple[str, str], ...] = (
    ("0023-fe0f-20e3.png", "002a-fe0f-20e3.png"),  # hash key / keycap: *
    ("0023-fe0f-20e3.png", "0032-fe0f-20e3.png"),  # hash key / keycap 2
    ("0030-fe0f-20e3.png", "0032-fe0f-20e3.png"),  # keycap 0 / keycap 2
    ("0030-fe0f-20e3.png", "1f51f.png"),  # keycap 0 / keycap ten
    ("0031-fe0f-20e3.png", "0032-fe0f-20e3.png"),  # keycap 1 / keycap 2
    ("0031-fe0f-20e3.png", "0037-fe0f-20e3.png"),  # keycap 1 / keycap 7
    ("0032-fe0f-20e3.png", "0034-fe0f-20e3.png"),  # keycap 2 / keycap 4
    ("0032-fe0f-20e3.png", "0037-fe0f-20e3.png"),  # keycap 2 / keycap 7
    ("0032-fe0f-20e3.png", "2198-fe0f.png"),  # keycap 2 / south east arrow
    ("1f170-fe0f.png", "1f18e.png"),  # negative squared latin capital letter  / negative squared ab
    ("1f192.png", "1f524.png"),  # squared cool / input symbol for latin letters
    ("1f196.png", "1f197.png"),  # squared ng / squared ok
    ("1f196.png", "1f199.png"),  # squared ng / squared up with exclamation mark
    ("1f236.png", "1f237-fe0f.png"),  # squared cjk unified ideograph-6709 / squared cjk unified ideograph-6708
    ("1f238.png", "1f23a.png"),  # squared cjk unified ideograph-7533 / squared cjk unified ideograph-55b6
    ("1f239.png", "1f23a.png"),  # squared cjk unified ideograph-5272 / squared cjk unified ideograph-55b6
    ("1f250.png", "3297-fe0f.png"),  # circled ideograph advantage / circled ideograph congratulation
    ("1f327-fe0f.png", "26c8-fe0f.png"),  # cloud with rain / cloud with lightning and rain
    ("1f34e.png", "1f34f.png"),  # red apple / green apple
    ("1f435.png", "1f649.png"),  # monkey face / hear-no-evil monkey
    ("1f464.png", "1f465.png"),  # bust in silhouette / busts in silhouette
    ("1f4ac.png", "1f5e8-fe0f.png"),  # speech balloon / left speech bubble
    ("1f4d5.png", "1f4d7.png"),  # closed book / green book
    ("1f4e4.png", "1f4e5.png"),  # outbox tray / inbox tray
    ("1f4ea.png", "1f4eb.png"),  # closed mailbox with lowered flag / closed mailbox with raised flag
    ("1f4f1.png", "1f4f3.png"),  # mobile phone / vibration mode
    ("1f4f2.png", "1f4f3.png"),  # mobile phone with rightwards arrow at  / vibration mode
    ("1f519.png", "1f51a.png"),  # back with leftwards arrow above / end with leftwards arrow above
    ("1f519.png", "1f51c.png"),  # back with leftwards arrow above / soon with rightwards arrow above
    ("1f51a.png", "1f51b.png"),  # end with leftwards arrow above / on with exclamation mark with left rig
    ("1f51b.png", "1f51c.png"),  # on with exclamation mark with left rig / soon with rightwards arrow above
    ("1f520.png", "1f521.png"),  # input symbol for latin capital letters / input symbol for latin small letters
    ("1f521.png", "1f522.png"),  # input symbol for latin small letters / input symbol for numbers
    ("1f522.png", "1f523.png"),  # input symbol for numbers / input symbol for symbols
    ("1f53c.png", "23cf-fe0f.png"),  # up-pointing small red triangle / eject button
    ("1f600.png", "1f603.png"),  # grinning face / smiling face with open mouth
    ("1f607.png", "1f60a.png"),  # smiling face with halo / smiling face with smiling eyes
    ("1f610.png", "1f636.png"),  # neutral face / face without mouth
    ("1f620.png", "1f621.png"),  # angry face / pouting face
    ("1f638.png", "1f639.png"),  # grinning cat face with smiling eyes / cat face with tears of joy
    ("1f6c2.png", "1f6c3.png"),  # passport control / customs
    ("1fab9.png", "1faba.png"),  # empty nest / nest with eggs
    ("203c-fe0f.png", "2757.png"),  # double exclamation mark / heavy exclamation mark symbol
    ("2049-fe0f.png", "2753.png"),  # exclamation question mark / black question mark ornament
    ("2196-fe0f.png", "2197-fe0f.png"),  # north west arrow / north east arrow
    ("3297-fe0f.png", "3299-fe0f.png"),  # circled ideograph congratulation / circled ideograph secret
)


# Openclipart across the whole collection (2026-11-24, before any benchmark run that uses it). The list above
# only compared family representatives, and only by SSCD and dedup links; the partial benchmark holds out
# every picture of a family, and its object matcher finds one picture's drawing *inside* another (openclipart
# seed 10: a held-out "pointing hand" is the training "hand with star" without its star, SSCD 0.65, object
# 0.91). So all 7,921 pictures were searched against each other: cross-family candidates from the 20 SSCD
# neighbours and the 10 best RootSIFT votes (``indexing.local``), object scores (``auditing.objects``) both
# ways for pairs with SSCD >= 0.5 or among the 3 best votes (11,532 pairs). Every pair with SSCD >= 0.75 or
# an object score >= 0.85, one per pair of families not already linked by the list above (135), was labelled
# by eye with the criterion above plus containment: related when one picture's whole drawing appears in the
# other (a card figure on its playing card, a top hat on a snowman, a blank triangle or hotel frame with a
# sign drawn on it, flags of one blue ensign with another badge). 34 related, 101 distinct (mostly warning
# signs with other pictograms, chess pieces, moon phases, a padlock open and shut; the Cisco 24-port switch
# stays distinct from the other two Cisco drawings, as in the list above). Pairs are (part, whole) by the
# object score where one contains the other. Full review: ``benchmarks/shared_drawings_review.json``.
OPENCLIPART_WHOLE: tuple[tuple[str, str], ...] = (
    ("computer/icons/lemon-theme/filesystems/home0.png", "buildings/homes/home0.png"),
    ("signs_and_symbols/british_virgin_islands.png", "signs_and_symbols/pitcairn_islands.png"),
    ("signs_and_symbols/british_virgin_islands.png", "signs_and_symbols/flags/oceania/new_zealand/newzealand.png"),
    ("signs_and_symbols/pitcairn_islands.png", "signs_and_symbols/flags/oceania/australia/australia.png"),
    ("shapes/cfbulb_lit_benji_park_.png", "shapes/cfbulb_brightlit_benji_p_.png"),
    ("people/card_figure_queen_nic_r.png", "recreation/games/cards/white/white_s_q.png"),
    ("people/card_figure_joker_nic_r.png", "recreation/games/cards/simple/simple_jk_b.png"),
    ("recreation/toys/rubik_s_cube_simple_petr_01.png", "recreation/toys/rubik_s_cube_petri_lumme_01.png"),
    ("people/card_figure_jack_nicu_r.png", "recreation/games/cards/simple/simple_s_j.png"),
    ("computer/switch_cisco_nicola_.png", "computer/router_cisco_nicola_.png"),
    ("people/card_figure_king_nicu_r.png", "recreation/games/cards/simple/simple_s_k.png"),
    ("food/fruit/lime_half_slice_ganson.png", "food/fruit/lime_slice_ganson.png"),
    ("computer/switch_hp_nicolas_c1.png", "computer/switch_hp_stack_xx_nic_.png"),
    ("transportation/car_ride_ganson.png", "people/beach_trip_ganson.png"),
    ("people/clothing/hats/hat_-_clothing_nicu_bucu_05.png", "recreation/holiday/snowman_01.png"),
    ("computer/icons/applications/handwithstar_susan_park_01.png", "computer/icons/pointing_hand_susan_park_01.png"),
    ("signs_and_symbols/triangle_yves_guillou_01.png", "signs_and_symbols/trebuchement_yves_guillo_01.png"),
    ("computer/finestra_architetto_fran_01.png", "computer/finestre_sovrapposte_arc_01.png"),
    ("food/fruit/grapes_simple.png", "food/beverages/alcohol/wine_corks_ganson.png"),
    ("food/meats_and_eggs/hot_dog.png", "food/menu_example1.png"),
    ("signs_and_symbols/trebuchement_yves_guillo_01.png", "signs_and_symbols/Trebuchement.png"),
    ("signs_and_symbols/danger_lectrique_yves_gu_01.png", "signs_and_symbols/DangerElectrique.png"),
    ("signs_and_symbols/risque_biologique_yves_g_01.png", "signs_and_symbols/RisqueBiologique.png"),
    ("computer/hardware/computer_keyboard_01.png", "computer/hardware/keyboard_01.png"),
    ("signs_and_symbols/ex_yves_guillou_01.png", "transportation/roadsigns/EX.png"),
    ("signs_and_symbols/RayonnementLaser.png", "signs_and_symbols/rayonnement_laser_yves_g_01.png"),
    ("transportation/vehicles/curve_ahead.png", "transportation/roadsigns/junc_curve.png"),
    ("computer/folders/folder_icon_01.png", "computer/icons/lemon-theme/filesystems/folder2.png"),
    ("food/fruit/lime_slice_ganson.png", "food/fruit/lime_half_ganson.png"),
    ("decorations/flourish_three_upper_right_corner_01.png", "decorations/flourish_three_corner_01.png"),
    ("signs_and_symbols/risque_biologique_yves_g_01.png", "signs_and_symbols/triangle_yves_guillou_01.png"),
    ("computer/icons/hotel_icon_collection_i_02.png", "computer/icons/hotel_icon_in_room_hair_01.png"),
    ("food/desserts/cone_soft_vanilla.png", "food/desserts/cone_soft_chocolate.png"),
    ("computer/icons/hotel_icon_collection_i_02.png", "computer/icons/hotel_icon_in_room_inte_01.png"),
)


# Openclipart, pairs the cuts above missed (2026-11-24, session 12, after openclipart seed 16, whose false alarms
# included a black-and-white picture and its coloured twin filed under other names): SSCD and object scores miss
# a line drawing recoloured or filled, the aligned edge score of the audit's verification (``matching.verify``)
# does not. Every cross-family candidate pair above with SSCD >= 0.5 (4,524) was verified; the pairs with a
# verified score >= 0.8, one per pair of families not already linked or reviewed (93), were labelled with the
# criterion above. 70 are two warning or safety signs of one frame with other pictograms: distinct by the
# criterion, not looked at one by one. Of the other 23, by eye: 15 related (below: black-and-white and
# coloured twins, a grey and a brass padlock, a scuba tank with and without its label, a waste basket empty
# and full, a window with and without its arrows, hotel icons that contain the blank frame, an AIGA
# pictogram or another icon's drawing), 8 distinct (moon phases, globes, a sun and a button). (part, whole)
# where one contains the other. Review: ``benchmarks/shared_drawings_review.json`` (``openclipart_edges``).
OPENCLIPART_EDGES: tuple[tuple[str, str], ...] = (
    ("food/desserts/glace_03_bw_jean-victor__01.png", "food/desserts/glace_03_jean-victor_bal_01.png"),
    ("food/perogies_bw.png", "food/perogies_ganson.png"),
    ("animals/lucchetto_grigio_archite_01.png", "animals/lucchetto_ottone_archite_01.png"),
    ("recreation/music/trumpet_b_flat__ganson.png", "recreation/music/trumpet_b_flat_colour_ganso.png"),
    ("computer/linux_powered_none_01.png", "logos/linux_hacked_fearzip_01.png"),
    ("computer/icons/hotel_icon_room_service_01.png", "computer/icons/hotel_icon_24_hour_room_01.png"),
    ("recreation/scuba_tank_01.png", "recreation/nitrox_scuba_tank_01.png"),
    ("food/spaghetti_bw.png", "food/spaghetti_ganson.png"),
    ("computer/icons/hotel_icon_collection_b_01.png", "computer/icons/hotel_icon_laundry_serv_01.png"),
    ("transportation/aiga-symbols/aiga_barber_shop_beauty_salon_.png", "computer/icons/hotel_icon_barber_or_ha_01.png"),
    ("office/cestino_vuoto_architetto_01.png", "office/cestino_pieno_architetto_01.png"),
    ("computer/icons/hotel_icon_internet_con_01.png", "computer/icons/hotel_icon_in_room_inte_01.png"),
    ("computer/icons/hotel_icon_collection_i_02.png", "computer/icons/hotel_icon_non_smoking__01.png"),
    ("computer/icons/hotel_icon_email_access_01.png", "computer/icons/hotel_icon_in_room_web__01.png"),
    ("computer/finestra_architetto_fran_01.png", "computer/finestra_ridimensiona_ar_01.png"),
)

# Openclipart pairs found by looking at a benchmark run's false alarms (so those seeds are seen for them): the
# training "crayon" is the pencil drawn on the "note" page (openclipart seed 13, session 11; SSCD 0.57, object
# 0.62, verified 0.26: under every cut above); it flagged three held-out images on seed 18 too. The RSS
# button is the XML button of the same set with another label (seeds 23 and 25, session 13: SSCD 0.67).
OPENCLIPART_SEEN: tuple[tuple[str, str], ...] = (
    ("office/crayon.png", "education/note.png"),
    ("computer/icons/xml_button_roman_bertle_01.png", "computer/icons/rss_button_roman_bertle_01.png"),
)


def related_pairs(dataset: str) -> tuple[tuple[str, str], ...]:
    """The reviewed related pairs of a packaged collection (dataset-relative paths); none for others."""
    return {"openclipart": OPENCLIPART, "emoji": EMOJI}.get(dataset, ())


def contained_pairs(dataset: str) -> tuple[tuple[str, str], ...]:
    """Reviewed (part, whole) pairs of a packaged collection: one picture's drawing, or one drawing filed
    twice, found across the whole collection (not only family representatives); none for others."""
    return {"openclipart": OPENCLIPART_WHOLE + OPENCLIPART_EDGES + OPENCLIPART_SEEN}.get(dataset, ())


def related_to_training(candidates: Iterable[str], training: Iterable[str], pairs: Iterable[tuple[str, str]],
                        groups: dict[str, str]) -> dict[str, str]:
    """Which ``candidates`` share a drawing with a ``training`` file through a reviewed pair, family-wide:
    {candidate: a related training file}. ``groups`` maps each file to its family (``groups.csv``); a pair
    (a, b) relates every file of a's family to every file of b's, so a held-out picture is caught when any
    picture of its family was reviewed against any picture of a training family. Files of one family are
    related anyway (a family-wise split never separates them); files outside ``groups`` are their own family."""
    fam_pairs: dict[str, set[str]] = {}
    for a, b in pairs:
        fa, fb = groups.get(a, a), groups.get(b, b)
        if fa != fb:
            fam_pairs.setdefault(fa, set()).add(fb)
            fam_pairs.setdefault(fb, set()).add(fa)
    train_by_family: dict[str, str] = {}
    for t in sorted(training):
        train_by_family.setdefault(groups.get(t, t), t)
    out: dict[str, str] = {}
    for c in candidates:
        fc = groups.get(c, c)
        hits = sorted(train_by_family[f] for f in fam_pairs.get(fc, set()) | {fc} if f in train_by_family)
        if hits and hits[0] != c:
            out[c] = hits[0]
    return out


def unrelated_subset(order: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The files of ``order``, taken greedily in that order, leaving out each file related (by ``pairs``)
    to one already taken. The relation is symmetric, so which of two related files is kept depends only
    on their order; files outside every pair are always kept."""
    rel: dict[str, set[str]] = {}
    for a, b in pairs:
        rel.setdefault(a, set()).add(b)
        rel.setdefault(b, set()).add(a)
    taken: list[str] = []
    seen: set[str] = set()
    for f in order:
        if rel.get(f, set()) & seen:
            continue
        taken.append(f)
        seen.add(f)
    return taken
